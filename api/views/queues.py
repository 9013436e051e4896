"""Queues: create, list, inspect (with live stats), change and delete them; purge, redrive
dead letters, and peek at the stored messages without leasing any.

Every handler on a named queue looks it up in the caller's tenant first (another tenant's
queue is a 404, whatever the key's patterns) and only then checks the key's resource
patterns (403). The serializer helpers at the top are shared with the topic and
subscription views.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import AUTH_ERRORS, INVALID, NOT_FOUND, UNAVAILABLE, page_of, problem
from api.views.base import TenantAPIView
from openplatform.redis_client import get_redis
from queues import selectors, services
from queues.engine import streams
from queues.engine.messages import now_ms
from queues.engine.targets import queue_consumer
from queues.models import (
    MAX_DELAY_SECONDS,
    MAX_DELIVERY_ATTEMPTS,
    MAX_VISIBILITY_TIMEOUT,
    NAME_PATTERN,
    Queue,
)
from queues.services import BACKOFF_LIMIT
from tenants.principals import Principal

NAME_RE = re.compile(NAME_PATTERN)
NAME_HELP = "1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric."
OFFSET_RE = re.compile(r"\A\d{1,20}-\d{1,20}\Z")
MIN_RETENTION, MAX_RETENTION = 60, 1209600
PEEK_DEFAULT, PEEK_MAX = 10, 100


# --- shared serializer pieces -------------------------------------------------------------


class StrictSerializer(serializers.Serializer):
    """A request body whose unknown fields are a 400 naming them, not silently dropped.
    Fields listed in ``immutable`` exist but cannot be sent here (PATCH)."""

    immutable: ClassVar[tuple[str, ...]] = ()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            extra = sorted(set(data) - set(self.fields))
            if extra:
                raise serializers.ValidationError(
                    {
                        name: [
                            "This field cannot be changed."
                            if name in self.immutable
                            else "Unknown field."
                        ]
                        for name in extra
                    }
                )
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, floats or booleans."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string: numbers are not turned into strings."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NameField(StrictCharField):
    """The name of a topic, queue or subscription."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", NAME_HELP)
        super().__init__(max_length=128, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not NAME_RE.match(value):
            raise serializers.ValidationError(NAME_HELP)
        return value


def offset_or_none(raw: str | None, field: str) -> str | None:
    """A stream offset from a query parameter (``<ms>-<seq>``); 400 naming ``field``."""
    if raw is None or raw == "":
        return None
    if not OFFSET_RE.match(raw):
        raise serializers.ValidationError({field: ["Not an offset: expected <ms>-<seq>."]})
    return raw


class RetryBackoffSerializer(StrictSerializer):
    min_seconds = StrictIntegerField(min_value=0, max_value=BACKOFF_LIMIT, required=False)
    max_seconds = StrictIntegerField(min_value=0, max_value=BACKOFF_LIMIT, required=False)


class StatsSerializer(serializers.Serializer):
    available = serializers.IntegerField(help_text="Deliverable by a pull now.")
    in_flight = serializers.IntegerField(help_text="Leased and not yet acknowledged.")
    delayed = serializers.IntegerField(help_text="Delayed, or waiting out a retry backoff.")
    oldest_age_seconds = serializers.IntegerField(
        help_text="Age of the oldest unacknowledged message (0 when there is none)."
    )


class StoredMessageSerializer(serializers.Serializer):
    """A message as a non-leasing read shows it (no ack_id, no delivery_attempt)."""

    id = serializers.CharField()
    body = serializers.JSONField(required=False, help_text="Absent for binary bodies.")
    body_base64 = serializers.CharField(required=False, help_text="Only for binary bodies.")
    attributes = serializers.DictField(child=serializers.CharField())
    key = serializers.CharField(allow_null=True)
    publish_time = serializers.DateTimeField()
    partition = serializers.IntegerField()
    offset = serializers.CharField()


class PeekedMessageSerializer(StoredMessageSerializer):
    delivery_attempts = serializers.IntegerField(help_text="Deliveries so far.")
    state = serializers.ChoiceField(choices=["available", "in_flight", "retry"])


def visible(
    queryset: QuerySet, principal: Principal, allowed: Callable[..., bool], *fields: str
) -> QuerySet:
    """``queryset`` narrowed to the rows a resource-limited key may access.

    ``allowed`` gets the values of ``fields`` of each row. The patterns are shell globs
    (Principal.may_access), so they are applied here rather than in SQL; a tenant has at most
    its plan's quota of rows, and a key without patterns skips this entirely."""
    if not principal.resources:
        return queryset
    rows = queryset.values_list("pk", *fields)
    return queryset.filter(pk__in=[row[0] for row in rows if allowed(*row[1:])])


def stats_of(consumer: Any) -> dict[str, int]:
    return streams.consumer_stats(get_redis(), consumer, now_ms())


# --- queues ---------------------------------------------------------------------------------


class QueueOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    visibility_timeout = serializers.IntegerField()
    delay_seconds = serializers.IntegerField()
    retention_seconds = serializers.IntegerField()
    max_delivery_attempts = serializers.IntegerField(allow_null=True)
    dead_letter_queue = serializers.CharField(allow_null=True)
    retry_backoff = RetryBackoffSerializer()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class QueueDetailOutputSerializer(QueueOutputSerializer):
    stats = StatsSerializer()


def queue_data(queue: Queue) -> dict[str, Any]:
    dlq = queue.dead_letter_queue
    return {
        "name": queue.name,
        "visibility_timeout": queue.visibility_timeout,
        "delay_seconds": queue.delay_seconds,
        "retention_seconds": queue.retention_seconds,
        "max_delivery_attempts": queue.max_delivery_attempts,
        "dead_letter_queue": dlq.name if dlq else None,
        "retry_backoff": queue.retry_backoff,
        "created_at": queue.created_at,
        "updated_at": queue.updated_at,
    }


class QueueView(TenantAPIView):
    """Shared by the views of one named queue."""

    def get_queue(self, name: str) -> Queue:
        """The caller's queue ``name``: 404 when this tenant has none (checked before the
        key's patterns, so another tenant's name is never a 403), 403 when the key's
        patterns do not cover it."""
        queue = selectors.queue_get(tenant=self.tenant, name=name)
        self.principal.require_resource("queue", queue.name)
        return queue

    def require_queues(self, *names: str | None) -> None:
        """Queues a change refers to (a dead-letter queue, a redrive target) must be covered
        by the key's patterns too."""
        for name in names:
            if name is not None:
                self.principal.require_resource("queue", name)


class QueueListCreateView(QueueView):
    """``GET|POST /v1/queues``."""

    class InputSerializer(StrictSerializer):
        name = NameField()
        visibility_timeout = StrictIntegerField(
            min_value=0, max_value=MAX_VISIBILITY_TIMEOUT, default=30
        )
        delay_seconds = StrictIntegerField(min_value=0, max_value=MAX_DELAY_SECONDS, default=0)
        retention_seconds = StrictIntegerField(
            min_value=MIN_RETENTION, max_value=MAX_RETENTION, default=345600
        )
        max_delivery_attempts = StrictIntegerField(
            min_value=1, max_value=MAX_DELIVERY_ATTEMPTS, allow_null=True, default=None
        )
        dead_letter_queue = NameField(allow_null=True, default=None)
        retry_backoff = RetryBackoffSerializer(required=False)

        class Meta:
            ref_name = "QueueCreate"

    @extend_schema(
        operation_id="queues_list",
        parameters=[
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter("cursor", str),
        ],
        responses={200: page_of("Queue", QueueOutputSerializer), **INVALID, **AUTH_ERRORS},
        description="The tenant's queues by name; a key limited to some resources sees those.",
    )
    def get(self, request: Request) -> Response:
        queryset = visible(
            selectors.queue_list(tenant=self.tenant),
            self.principal,
            lambda name: self.principal.may_access("queue", name),
            "name",
        )
        return Response(
            paginate(queryset, request.query_params, ordering=["name"], serialize=queue_data)
        )

    @extend_schema(
        operation_id="queues_create",
        request=InputSerializer,
        responses={
            201: QueueOutputSerializer,
            **INVALID,
            **AUTH_ERRORS,
            403: problem("forbidden (scope or resource) or quota_exceeded (too many queues)"),
            409: problem("conflict: a queue of that name exists"),
            **UNAVAILABLE,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        self.require_queues(fields["name"], fields["dead_letter_queue"])
        queue = services.queue_create(tenant=self.tenant, actor=self.principal.actor, **fields)
        return Response(queue_data(queue), status=201)


class QueueDetailView(QueueView):
    """``GET|PATCH|DELETE /v1/queues/{queue}``."""

    class InputSerializer(StrictSerializer):
        immutable = ("name",)

        visibility_timeout = StrictIntegerField(min_value=0, max_value=MAX_VISIBILITY_TIMEOUT)
        delay_seconds = StrictIntegerField(min_value=0, max_value=MAX_DELAY_SECONDS)
        retention_seconds = StrictIntegerField(min_value=MIN_RETENTION, max_value=MAX_RETENTION)
        max_delivery_attempts = StrictIntegerField(
            min_value=1, max_value=MAX_DELIVERY_ATTEMPTS, allow_null=True
        )
        dead_letter_queue = NameField(allow_null=True)
        retry_backoff = RetryBackoffSerializer()

        class Meta:
            ref_name = "QueueUpdate"

    @extend_schema(
        operation_id="queues_retrieve",
        description="The queue's settings and its live message counts.",
        responses={
            200: QueueDetailOutputSerializer,
            **AUTH_ERRORS,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
    )
    def get(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        consumer = queue_consumer(str(self.tenant.id), selectors.queue_document(row))
        return Response({**queue_data(row), "stats": stats_of(consumer)})

    @extend_schema(
        operation_id="queues_update",
        request=InputSerializer,
        responses={200: QueueOutputSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
        description="Changes the given settings; the name cannot change.",
    )
    def patch(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        self.require_queues(changes.get("dead_letter_queue"))
        updated = services.queue_update(
            tenant=self.tenant, actor=self.principal.actor, queue=row, changes=changes
        )
        return Response(queue_data(updated))

    @extend_schema(
        operation_id="queues_destroy",
        responses={
            204: None,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: problem("conflict: the queue is the dead-letter queue of another"),
        },
        description="Deletes the queue and all its messages.",
    )
    def delete(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        services.queue_delete(tenant=self.tenant, actor=self.principal.actor, queue=row)
        return Response(status=204)


class QueuePurgeView(QueueView):
    """``POST /v1/queues/{queue}/purge``: a management action, so the manage scope."""

    @extend_schema(
        operation_id="queues_purge",
        request=None,
        responses={
            200: inline_serializer("QueuePurged", {"purged": serializers.IntegerField()}),
            **AUTH_ERRORS,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
        description="Deletes every stored and delayed message of the queue (manage scope).",
    )
    def post(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        purged = services.queue_purge(tenant=self.tenant, actor=self.principal.actor, queue=row)
        return Response({"purged": purged})


class QueueRedriveView(QueueView):
    """``POST /v1/queues/{queue}/redrive``: a management action, so the manage scope."""

    class InputSerializer(StrictSerializer):
        to = NameField(
            required=False,
            allow_null=True,
            default=None,
            help_text="The queue to move them to; default: each message's source queue.",
        )
        max_messages = StrictIntegerField(
            min_value=1, required=False, allow_null=True, default=None
        )

        class Meta:
            ref_name = "QueueRedrive"

    @extend_schema(
        operation_id="queues_redrive",
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "QueueRedriven",
                {
                    "moved": serializers.IntegerField(),
                    "skipped": serializers.IntegerField(
                        help_text="Dead letters left in place: their source is gone, is a "
                        "subscription, or is not covered by the key."
                    ),
                },
            ),
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
        description="Moves dead letters back, without their op-* attributes (manage scope).",
    )
    def post(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.require_queues(data.validated_data["to"])
        result = services.queue_redrive(
            tenant=self.tenant,
            actor=self.principal.actor,
            queue=row,
            may_target=lambda name: self.principal.may_access("queue", name),
            **data.validated_data,
        )
        return Response(result)


class QueuePeekView(QueueView):
    """``GET /v1/queues/{queue}/messages`` (POST on that path is the publish view)."""

    scope_map = {"GET": "consume"}

    class QuerySerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=PEEK_MAX, default=PEEK_DEFAULT)
        after = serializers.CharField(required=False, allow_blank=True)

    @extend_schema(
        operation_id="queues_messages_peek",
        parameters=[
            OpenApiParameter("limit", int, description=f"1..{PEEK_MAX}, default {PEEK_DEFAULT}"),
            OpenApiParameter("after", str, description="Start after this offset (a page's next)"),
        ],
        responses={
            200: inline_serializer(
                "QueuePeek",
                {
                    "messages": PeekedMessageSerializer(many=True),
                    "next": serializers.CharField(
                        allow_null=True, help_text="Pass as after for the next page."
                    ),
                },
            ),
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
        description="The queue's stored messages in order, with their state; leases nothing.",
    )
    def get(self, request: Request, queue: str) -> Response:
        row = self.get_queue(queue)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        after = offset_or_none(query.validated_data.get("after"), "after")
        consumer = queue_consumer(str(self.tenant.id), selectors.queue_document(row))
        messages = streams.peek(get_redis(), consumer, limit=limit, after=after)
        more = len(messages) == limit
        return Response({"messages": messages, "next": messages[-1]["offset"] if more else None})
