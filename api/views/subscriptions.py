"""Subscriptions: create, list, inspect (with live stats), change and delete them, and seek
them to replay or skip their topic's retained log.

A subscription is reached by a key whose patterns cover ``subscription:<name>`` or
``topic:<its topic>``. Creating one needs the topic covered: a subscription reads every
message of its topic, so a key must not be able to open one on a topic it may not read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import attributes_schema, page_of, problem
from api.views.base import TenantAPIView
from api.views.queues import (
    NameField,
    RetryBackoffSerializer,
    StatsSerializer,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    visible,
)
from kernel.limits import (
    DEFAULT_VISIBILITY_TIMEOUT,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    MAX_DELIVERY_ATTEMPTS,
    MAX_VISIBILITY_TIMEOUT,
)
from queues import selectors, services
from queues.models import StartAt, Subscription

# ASCII digits ([0-9], not \d: that is any Unicode digit); any number of fraction digits, a
# leap second, lower-case t and z, as RFC 3339 allows (and a space for the T, as it notes).
RFC3339 = re.compile(
    r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
SEEK_HELP = '"earliest", "latest" or an RFC 3339 time'


@extend_schema_field(attributes_schema())
class FilterAttributesField(serializers.DictField):
    pass


class FilterSerializer(StrictSerializer):
    attributes = FilterAttributesField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Deliver only messages that carry all these attributes with these values.",
    )

    def validate_attributes(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ATTRIBUTES:
            raise serializers.ValidationError(f"At most {MAX_ATTRIBUTES} attributes.")
        if any(not 1 <= len(name) <= MAX_ATTRIBUTE_NAME for name in value):
            raise serializers.ValidationError(
                f"Attribute names are 1 to {MAX_ATTRIBUTE_NAME} characters."
            )
        if any("\x00" in name for name in value):  # PostgreSQL's jsonb refuses NUL in text
            raise serializers.ValidationError("Attribute names may not contain NUL (\\u0000).")
        return value


class SubscriptionOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    topic = serializers.CharField(help_text="The topic's name.")
    visibility_timeout = serializers.IntegerField()
    max_delivery_attempts = serializers.IntegerField(allow_null=True)
    dead_letter_queue = serializers.CharField(allow_null=True)
    retry_backoff = RetryBackoffSerializer()
    filter = FilterSerializer()
    start_at = serializers.ChoiceField(choices=StartAt.values)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class SubscriptionDetailOutputSerializer(SubscriptionOutputSerializer):
    stats = StatsSerializer()


def subscription_data(sub: Subscription) -> dict[str, Any]:
    dlq = sub.dead_letter_queue
    return {
        "name": sub.name,
        "topic": sub.topic.name,
        "visibility_timeout": sub.visibility_timeout,
        "max_delivery_attempts": sub.max_delivery_attempts,
        "dead_letter_queue": dlq.name if dlq else None,
        "retry_backoff": sub.retry_backoff,
        "filter": {"attributes": dict(sub.filter_attributes or {})},
        "start_at": sub.start_at,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
    }


class SubscriptionView(TenantAPIView):
    """Shared by the views of subscriptions: the gate passes ``subscription`` as the row
    (a key covers it by its own name or its topic's)."""

    resource_kind = "subscription"

    def require_dead_letter_queue(self, name: str | None) -> None:
        if name is not None:
            self.principal.require_resource("queue", name)


class SubscriptionListCreateView(SubscriptionView):
    """``GET|POST /v1/subscriptions``."""

    class InputSerializer(StrictSerializer):
        name = NameField()
        topic = NameField(help_text="The topic's name.")
        visibility_timeout = StrictIntegerField(
            min_value=0, max_value=MAX_VISIBILITY_TIMEOUT, default=DEFAULT_VISIBILITY_TIMEOUT
        )
        max_delivery_attempts = StrictIntegerField(
            min_value=1, max_value=MAX_DELIVERY_ATTEMPTS, allow_null=True, default=None
        )
        dead_letter_queue = NameField(allow_null=True, default=None)
        retry_backoff = RetryBackoffSerializer(required=False)
        filter = FilterSerializer(required=False)
        start_at = serializers.ChoiceField(choices=StartAt.values, default=StartAt.LATEST)

        class Meta:
            ref_name = "SubscriptionCreate"

    @extend_schema(
        operation_id="subscriptions_list",
        responses={200: page_of("Subscription", SubscriptionOutputSerializer)},
        description="The tenant's subscriptions by name; a key limited to some resources sees "
        "those it covers by name or by topic.",
    )
    def get(self, request: Request) -> Response:
        queryset = visible(
            selectors.subscription_list(tenant=self.tenant),
            self.principal,
            lambda name, topic: self.principal.covers("subscription", name, topic=topic),
            "name",
            "topic__name",
        )
        return Response(
            paginate(queryset, request.query_params, ordering=["name"], serialize=subscription_data)
        )

    @extend_schema(
        operation_id="subscriptions_create",
        request=InputSerializer,
        responses={
            201: SubscriptionOutputSerializer,
            400: problem(
                "invalid_request: a field is invalid, topic is no topic or dead_letter_queue "
                "no queue"
            ),
            403: problem(
                "forbidden (scope, or the key does not cover the topic or dead-letter queue) "
                "or quota_exceeded (too many subscriptions)"
            ),
            409: problem("conflict: a subscription of that name exists"),
        },
        description="Receives every message published to the topic from now on (or every "
        "retained one with start_at earliest) that matches its filter.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        self.principal.require_resource("topic", fields["topic"])
        self.require_dead_letter_queue(fields["dead_letter_queue"])
        sub = services.subscription_create(tenant=self.tenant, actor=self.principal.actor, **fields)
        return Response(subscription_data(sub), status=201)


class SubscriptionDetailView(SubscriptionView):
    """``GET|PATCH|DELETE /v1/subscriptions/{subscription}``."""

    class InputSerializer(StrictSerializer):
        immutable = ("name", "topic", "start_at")

        visibility_timeout = StrictIntegerField(min_value=0, max_value=MAX_VISIBILITY_TIMEOUT)
        max_delivery_attempts = StrictIntegerField(
            min_value=1, max_value=MAX_DELIVERY_ATTEMPTS, allow_null=True
        )
        dead_letter_queue = NameField(allow_null=True)
        retry_backoff = RetryBackoffSerializer()
        filter = FilterSerializer()

        class Meta:
            ref_name = "SubscriptionUpdate"

    @extend_schema(
        operation_id="subscriptions_retrieve",
        description="The subscription's settings and its live message counts.",
        responses={200: SubscriptionDetailOutputSerializer},
    )
    def get(self, request: Request, subscription: Subscription) -> Response:
        return Response(
            {**subscription_data(subscription), "stats": selectors.live_stats([subscription])[0]}
        )

    @extend_schema(
        operation_id="subscriptions_update",
        request=InputSerializer,
        responses={
            200: SubscriptionOutputSerializer,
            400: problem("invalid_request: a field is invalid, or dead_letter_queue is no queue"),
        },
        description="Changes the given settings; name, topic and start_at cannot change.",
    )
    def patch(self, request: Request, subscription: Subscription) -> Response:
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        self.require_dead_letter_queue(changes.get("dead_letter_queue"))
        updated = services.subscription_update(
            tenant=self.tenant,
            actor=self.principal.actor,
            subscription=subscription,
            changes=changes,
        )
        return Response(subscription_data(updated))

    @extend_schema(
        operation_id="subscriptions_destroy",
        responses={204: None},
        description="Deletes the subscription and its leases; the topic's log is untouched.",
    )
    def delete(self, request: Request, subscription: Subscription) -> Response:
        services.subscription_delete(
            tenant=self.tenant, actor=self.principal.actor, subscription=subscription
        )
        return Response(status=204)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 date-time as an aware UTC datetime; None when it is not one. A leap second
    is the second after :59; a time whose UTC instant is beyond Python's years 1..9999 (as
    9999-12-31T23:59:59-23:59 is) becomes the first or last representable one, which seeks
    exactly the same (to before, or after, every message)."""
    match = RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, sign, offset_hours, offset_minutes = match.groups()[6:]
    if int(offset_hours or 0) > 23 or int(offset_minutes or 0) > 59 or second > 60:
        return None
    try:
        local = datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:  # no such date or time
        return None
    offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
    if sign == "-":
        offset = -offset
    after = timedelta(
        seconds=second - min(second, 59), microseconds=int((fraction or "0")[:6].ljust(6, "0"))
    )
    try:
        return (local + after - offset).replace(tzinfo=UTC)
    except OverflowError:
        return (datetime.min if offset > after else datetime.max).replace(tzinfo=UTC)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["earliest", "latest"]},
            {"type": "string", "format": "date-time"},
        ]
    }
)
class SeekTargetField(serializers.Field[Any, Any, Any, Any]):
    """``earliest``, ``latest`` or an RFC 3339 time (with its offset) → str or aware UTC
    datetime."""

    default_error_messages = {"invalid": f"Expected {SEEK_HELP}."}

    def to_internal_value(self, data: Any) -> str | datetime:
        if data in ("earliest", "latest"):
            return str(data)
        moment = parse_rfc3339(data) if isinstance(data, str) else None
        if moment is None:
            self.fail("invalid")
        return moment

    def to_representation(self, value: str | datetime) -> str:
        if isinstance(value, datetime):
            # seeks are to the millisecond, like stream offsets
            utc = value.astimezone(UTC)
            spec = "milliseconds" if utc.microsecond else "seconds"
            return utc.isoformat(timespec=spec).replace("+00:00", "Z")
        return value


class SubscriptionSeekView(SubscriptionView):
    """``POST /v1/subscriptions/{subscription}/seek``: what a consumer does, so the consume
    scope."""

    scope_map = {"POST": "consume"}

    class InputSerializer(StrictSerializer):
        to = SeekTargetField(help_text=SEEK_HELP)

        class Meta:
            ref_name = "SubscriptionSeek"

    class OutputSerializer(serializers.Serializer[Any]):
        to = SeekTargetField(help_text=SEEK_HELP)

        class Meta:
            ref_name = "SubscriptionSought"

    @extend_schema(
        operation_id="subscriptions_seek",
        request=InputSerializer,
        responses={200: OutputSerializer},
        description="Replays (or skips) the retained log from that point: every message "
        "published at or after it is delivered (again); leases in flight are dropped. "
        "Consume scope.",
    )
    def post(self, request: Request, subscription: Subscription) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        to = data.validated_data["to"]
        services.subscription_seek(
            tenant=self.tenant, actor=self.principal.actor, subscription=subscription, to=to
        )
        return Response(self.OutputSerializer({"to": to}).data)
