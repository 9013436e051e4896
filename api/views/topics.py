"""Topics: create, list, inspect, change the retention of and delete them, and read a
partition's retained log without any subscription (offset-based consumers keep their own
position).

A named topic is looked up in the caller's tenant first (404), then checked against the key's
resource patterns (403).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import page_of, problem
from api.views.base import TenantAPIView
from api.views.queues import (
    MAX_RETENTION,
    MIN_RETENTION,
    NameField,
    OffsetField,
    OffsetOutField,
    QueryIntegerField,
    StoredMessageSerializer,
    StrictIntegerField,
    StrictSerializer,
    backlog_data,
    backlog_field,
    backlog_output_field,
    visible,
)
from kernel.limits import (
    DEFAULT_LOG_READ,
    DEFAULT_PARTITIONS,
    DEFAULT_TOPIC_RETENTION,
    MAX_LOG_READ,
    MAX_PARTITIONS,
)
from queues import selectors, services
from queues.models import Topic

LOG_DEFAULT, LOG_MAX = DEFAULT_LOG_READ, MAX_LOG_READ


class TopicOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    partitions = serializers.IntegerField()
    retention_seconds = serializers.IntegerField()
    max_backlog_messages = backlog_output_field("max_backlog_messages")
    max_backlog_bytes = backlog_output_field("max_backlog_bytes")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def topic_data(topic: Topic) -> dict[str, Any]:
    return {
        "name": topic.name,
        "partitions": topic.partitions,
        "retention_seconds": topic.retention_seconds,
        **backlog_data(topic),
        "created_at": topic.created_at,
        "updated_at": topic.updated_at,
    }


class TopicView(TenantAPIView):
    """Shared by the views of topics: the gate passes ``topic`` as the row."""

    resource_kind = "topic"


class TopicListCreateView(TopicView):
    """``GET|POST /v1/topics``."""

    class InputSerializer(StrictSerializer):
        name = NameField()
        partitions = StrictIntegerField(
            min_value=1, max_value=MAX_PARTITIONS, default=DEFAULT_PARTITIONS
        )
        retention_seconds = StrictIntegerField(
            min_value=MIN_RETENTION, max_value=MAX_RETENTION, default=DEFAULT_TOPIC_RETENTION
        )
        max_backlog_messages = backlog_field("max_backlog_messages", create=True)
        max_backlog_bytes = backlog_field("max_backlog_bytes", create=True)

        class Meta:
            ref_name = "TopicCreate"

    @extend_schema(
        operation_id="topics_list",
        responses={200: page_of("Topic", TopicOutputSerializer)},
        description="The tenant's topics by name; a key limited to some resources sees those.",
    )
    def get(self, request: Request) -> Response:
        queryset = visible(
            selectors.topic_list(tenant=self.tenant),
            self.principal,
            lambda name: self.principal.may_access("topic", name),
            "name",
        )
        return Response(
            paginate(queryset, request.query_params, ordering=["name"], serialize=topic_data)
        )

    @extend_schema(
        operation_id="topics_create",
        request=InputSerializer,
        responses={
            201: TopicOutputSerializer,
            403: problem(
                "forbidden (scope or resource), or quota_exceeded: the tenant has max_topics "
                "topics already, or retention_seconds is above its max_retention_seconds"
            ),
            409: problem("conflict: a topic of that name exists"),
        },
        description="The number of partitions is fixed once the topic exists.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.principal.require_resource("topic", data.validated_data["name"])
        topic = services.topic_create(
            tenant=self.tenant, actor=self.principal.actor, **data.validated_data
        )
        return Response(topic_data(topic), status=201)


class TopicDetailView(TopicView):
    """``GET|PATCH|DELETE /v1/topics/{topic}``."""

    class InputSerializer(StrictSerializer):
        immutable = ("name", "partitions")

        retention_seconds = StrictIntegerField(min_value=MIN_RETENTION, max_value=MAX_RETENTION)
        max_backlog_messages = backlog_field("max_backlog_messages", create=False)
        max_backlog_bytes = backlog_field("max_backlog_bytes", create=False)

        class Meta:
            ref_name = "TopicUpdate"

    @extend_schema(
        operation_id="topics_retrieve",
        description="The topic's settings.",
        responses={200: TopicOutputSerializer},
    )
    def get(self, request: Request, topic: Topic) -> Response:
        return Response(topic_data(topic))

    @extend_schema(
        operation_id="topics_update",
        request=InputSerializer,
        responses={
            200: TopicOutputSerializer,
            403: problem(
                "forbidden (scope or resource), or quota_exceeded: retention_seconds is above "
                "the tenant's max_retention_seconds"
            ),
        },
        description="Only the retention and the backlog limits can change: more partitions "
        "would break per-key order.",
    )
    def patch(self, request: Request, topic: Topic) -> Response:
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        updated = services.topic_update(
            tenant=self.tenant,
            actor=self.principal.actor,
            topic=topic,
            changes=dict(data.validated_data),
        )
        return Response(topic_data(updated))

    @extend_schema(
        operation_id="topics_destroy",
        responses={204: None},
        description="Deletes the topic, its subscriptions and all their messages.",
    )
    def delete(self, request: Request, topic: Topic) -> Response:
        services.topic_delete(tenant=self.tenant, actor=self.principal.actor, topic=topic)
        return Response(status=204)


class TopicLogView(TopicView):
    """``GET /v1/topics/{topic}/messages`` (POST on that path is the publish view)."""

    scope_map = {"GET": "consume"}

    class QuerySerializer(serializers.Serializer[Any]):
        partition = QueryIntegerField(
            min_value=0,
            max_value=MAX_PARTITIONS - 1,
            default=0,
            help_text="0..partitions-1, default 0.",
        )
        after = OffsetField(required=False, help_text="Start after this offset (a page's next).")
        limit = QueryIntegerField(
            min_value=1,
            max_value=LOG_MAX,
            default=LOG_DEFAULT,
            help_text=f"1..{LOG_MAX}, default {LOG_DEFAULT}.",
        )

    @extend_schema(
        operation_id="topics_messages_read",
        parameters=[QuerySerializer],
        responses={
            200: inline_serializer(
                "TopicLog",
                {
                    "messages": StoredMessageSerializer(many=True),
                    "next": OffsetOutField(
                        allow_null=True,
                        help_text="Pass as after for the next page; null when this page "
                        "reached the end of the log (keep the last offset to poll again).",
                    ),
                },
            ),
            400: problem(
                "invalid_request: a parameter is invalid, or partition is not below "
                "the topic's partitions"
            ),
        },
        description="A partition's retained messages in publish order (consume scope).",
    )
    def get(self, request: Request, topic: Topic) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = selectors.topic_log(
            topic,
            partition=query.validated_data["partition"],
            limit=query.validated_data["limit"],
            after=query.validated_data.get("after"),
        )
        return Response(page)
