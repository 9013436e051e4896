"""Queues: create, list, inspect (with live stats), change and delete them; purge, redrive
dead letters, and peek at the stored messages without leasing any.

Every handler on a named queue looks it up in the caller's tenant first (another tenant's
queue is a 404, whatever the key's patterns) and only then checks the key's resource
patterns (403). The serializer helpers at the top are shared with the topic and
subscription views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from django.db.models import Model, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import DECIMAL, paginate
from api.schema import NAME_HELP, page_of, problem
from api.views.base import TenantAPIView
from kernel.limits import (
    DEFAULT_QUEUE_RETENTION,
    DEFAULT_VISIBILITY_TIMEOUT,
    MAX_BACKOFF_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_DELIVERY_ATTEMPTS,
    MAX_RETENTION_SECONDS,
    MAX_VISIBILITY_TIMEOUT,
    MIN_RETENTION_SECONDS,
    STREAM_ID_PATTERN,
    is_stream_id,
)
from queues import selectors, services
from queues.models import Queue, name_validator
from tenants.principals import Principal

MIN_RETENTION, MAX_RETENTION = MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS
M = TypeVar("M", bound=Model)
MAX_INT64 = 2**63 - 1  # what JSON clients (a Java long, a Go int64) can send
PEEK_DEFAULT, PEEK_MAX = 10, 100


# --- shared serializer pieces -------------------------------------------------------------


class StrictSerializer(serializers.Serializer[Any]):
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


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: no strings or numbers ("true", 1)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


FAIR_HELP = (
    "Fair mode: a message's key is its group, and a pull serves the messages of quiet groups "
    "before those of a group holding more than 10 % of the queue's in-flight messages (and at "
    "least 30). Keys promise no order beyond the queue's own."
)


class NameField(StrictCharField):
    """The name of a topic, queue or subscription (its validator is also its schema's
    pattern)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", NAME_HELP)
        super().__init__(
            max_length=128, trim_whitespace=False, validators=[name_validator], **kwargs
        )


class QueryParameter(serializers.Field[Any, Any, Any, Any]):
    """A query parameter whose empty value (``?limit=``) is a value, and so a 400, not the
    absence DRF's form handling would make of it (and then use the default)."""

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        return dictionary.get(self.field_name or "", empty)


class QueryIntegerField(QueryParameter, serializers.IntegerField):
    """An integer query parameter: ASCII digits only. (DRF's IntegerField would also take
    "1.0", " 1" and Unicode digits.)"""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not DECIMAL.fullmatch(data):
            self.fail("invalid")
        return int(super().to_internal_value(data))


@extend_schema_field({"type": "string", "pattern": STREAM_ID_PATTERN})
class OffsetField(QueryParameter, serializers.CharField):
    """A stream offset, ``<ms>-<seq>`` (a message's ``offset``, a page's ``next``): ASCII
    digits, each part below 2**64, or a 400 naming the parameter, never a Redis error."""

    default_error_messages = {"offset": "Not an offset: expected <ms>-<seq>."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = str(super().to_internal_value(data))
        if not is_stream_id(value):
            self.fail("offset")
        return value


class RetryBackoffSerializer(StrictSerializer):
    min_seconds = StrictIntegerField(min_value=0, max_value=MAX_BACKOFF_SECONDS, required=False)
    max_seconds = StrictIntegerField(min_value=0, max_value=MAX_BACKOFF_SECONDS, required=False)


class StatsSerializer(serializers.Serializer[Any]):
    available = serializers.IntegerField(help_text="Deliverable by a pull now.")
    in_flight = serializers.IntegerField(help_text="Leased and not yet acknowledged.")
    delayed = serializers.IntegerField(help_text="Delayed, or waiting out a retry backoff.")
    oldest_age_seconds = serializers.IntegerField(
        help_text="Age of the oldest unacknowledged message (0 when there is none)."
    )


@extend_schema_field({"type": "string", "pattern": STREAM_ID_PATTERN})
class OffsetOutField(serializers.CharField):
    """A message's offset in its stream, ``<ms>-<seq>``, as answers show it."""


class StoredMessageSerializer(serializers.Serializer[Any]):
    """A message as a non-leasing read shows it (no ack_id, no delivery_attempt)."""

    id = serializers.CharField()
    body = serializers.JSONField(
        required=False, allow_null=True, help_text="Absent for binary bodies."
    )
    body_base64 = serializers.CharField(
        required=False, allow_blank=True, help_text="Only for binary bodies."
    )
    attributes = serializers.DictField(child=serializers.CharField(allow_blank=True))
    key = serializers.CharField(allow_null=True)
    publish_time = serializers.DateTimeField()
    partition = serializers.IntegerField()
    offset = OffsetOutField()


class PeekedMessageSerializer(StoredMessageSerializer):
    delivery_attempts = serializers.IntegerField(help_text="Deliveries so far.")
    state = serializers.ChoiceField(choices=["available", "in_flight", "retry"])


def visible(
    queryset: QuerySet[M], principal: Principal, allowed: Callable[..., bool], *fields: str
) -> QuerySet[M]:
    """``queryset`` narrowed to the rows a resource-limited key may access.

    ``allowed`` gets the values of ``fields`` of each row. The patterns are shell globs
    (Principal.may_access), so they are applied here rather than in SQL; a tenant has at most
    its plan's quota of rows, and a key without patterns skips this entirely."""
    if not principal.resources:
        return queryset
    rows = queryset.values_list("pk", *fields)
    return queryset.filter(pk__in=[row[0] for row in rows if allowed(*row[1:])])


BACKLOG_HELP = {
    "max_backlog_messages": "Messages stored at most (null: the tenant's limit holds). ",
    "max_backlog_bytes": "Bytes stored at most (null: the tenant's limit holds). ",
}
BACKLOG_NOTE = (
    "It narrows the tenant's limit; one above the tenant's is kept, but the tenant's holds."
)


def backlog_field(name: str, *, create: bool) -> StrictIntegerField:
    """A request field of a queue's or topic's own backlog limit (tenants.quotas
    RESOURCE_QUOTAS): 1..2**63-1 or null; on create it defaults to null."""
    extra: dict[str, Any] = {"default": None} if create else {}
    return StrictIntegerField(
        min_value=1,
        max_value=MAX_INT64,
        allow_null=True,
        required=False,
        help_text=BACKLOG_HELP[name] + BACKLOG_NOTE,
        **extra,
    )


def backlog_output_field(name: str) -> serializers.IntegerField:
    return serializers.IntegerField(allow_null=True, help_text=BACKLOG_HELP[name] + BACKLOG_NOTE)


def backlog_data(row: Model) -> dict[str, int | None]:
    """A queue's or topic's own backlog limits, as answers show them."""
    return {name: getattr(row, name) for name in BACKLOG_HELP}


# --- queues ---------------------------------------------------------------------------------


class QueueOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    visibility_timeout = serializers.IntegerField()
    delay_seconds = serializers.IntegerField()
    retention_seconds = serializers.IntegerField()
    max_delivery_attempts = serializers.IntegerField(allow_null=True)
    dead_letter_queue = serializers.CharField(allow_null=True)
    retry_backoff = RetryBackoffSerializer()
    max_backlog_messages = backlog_output_field("max_backlog_messages")
    max_backlog_bytes = backlog_output_field("max_backlog_bytes")
    fair = serializers.BooleanField(help_text=FAIR_HELP)
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
        **backlog_data(queue),
        "fair": queue.fair,
        "created_at": queue.created_at,
        "updated_at": queue.updated_at,
    }


class QueueView(TenantAPIView):
    """Shared by the views of queues: the gate passes ``queue`` as the row."""

    resource_kind = "queue"

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
            min_value=0, max_value=MAX_VISIBILITY_TIMEOUT, default=DEFAULT_VISIBILITY_TIMEOUT
        )
        delay_seconds = StrictIntegerField(min_value=0, max_value=MAX_DELAY_SECONDS, default=0)
        retention_seconds = StrictIntegerField(
            min_value=MIN_RETENTION, max_value=MAX_RETENTION, default=DEFAULT_QUEUE_RETENTION
        )
        max_delivery_attempts = StrictIntegerField(
            min_value=1, max_value=MAX_DELIVERY_ATTEMPTS, allow_null=True, default=None
        )
        dead_letter_queue = NameField(allow_null=True, default=None)
        retry_backoff = RetryBackoffSerializer(required=False)
        max_backlog_messages = backlog_field("max_backlog_messages", create=True)
        max_backlog_bytes = backlog_field("max_backlog_bytes", create=True)
        fair = StrictBooleanField(default=False, help_text=FAIR_HELP)

        class Meta:
            ref_name = "QueueCreate"

    @extend_schema(
        operation_id="queues_list",
        responses={200: page_of("Queue", QueueOutputSerializer)},
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
            400: problem("invalid_request: a field is invalid, or dead_letter_queue is no queue"),
            403: problem(
                "forbidden (scope or resource), or quota_exceeded: the tenant has max_queues "
                "queues already, or retention_seconds is above its max_retention_seconds"
            ),
            409: problem("conflict: a queue of that name exists"),
        },
        description="Creates a queue; a dead-letter queue must exist already.",
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
        max_backlog_messages = backlog_field("max_backlog_messages", create=False)
        max_backlog_bytes = backlog_field("max_backlog_bytes", create=False)
        fair = StrictBooleanField(help_text=FAIR_HELP)

        class Meta:
            ref_name = "QueueUpdate"

    @extend_schema(
        operation_id="queues_retrieve",
        description="The queue's settings and its live message counts.",
        responses={200: QueueDetailOutputSerializer},
    )
    def get(self, request: Request, queue: Queue) -> Response:
        (stats,) = selectors.live_stats([queue])
        return Response({**queue_data(queue), "stats": stats})

    @extend_schema(
        operation_id="queues_update",
        request=InputSerializer,
        responses={
            200: QueueOutputSerializer,
            400: problem("invalid_request: a field is invalid, or dead_letter_queue is no queue"),
            403: problem(
                "forbidden (scope or resource), or quota_exceeded: retention_seconds is above "
                "the tenant's max_retention_seconds"
            ),
        },
        description="Changes the given settings; the name cannot change.",
    )
    def patch(self, request: Request, queue: Queue) -> Response:
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        self.require_queues(changes.get("dead_letter_queue"))
        updated = services.queue_update(
            tenant=self.tenant, actor=self.principal.actor, queue=queue, changes=changes
        )
        return Response(queue_data(updated))

    @extend_schema(
        operation_id="queues_destroy",
        responses={
            204: None,
            409: problem("conflict: the queue is the dead-letter queue of another"),
        },
        description="Deletes the queue and all its messages.",
    )
    def delete(self, request: Request, queue: Queue) -> Response:
        services.queue_delete(tenant=self.tenant, actor=self.principal.actor, queue=queue)
        return Response(status=204)


class QueuePurgeView(QueueView):
    """``POST /v1/queues/{queue}/purge``: a management action, so the manage scope."""

    @extend_schema(
        operation_id="queues_purge",
        request=None,
        responses={
            200: inline_serializer("QueuePurged", {"purged": serializers.IntegerField()}),
        },
        description="Deletes every stored and delayed message of the queue (manage scope).",
    )
    def post(self, request: Request, queue: Queue) -> Response:
        purged = services.queue_purge(tenant=self.tenant, actor=self.principal.actor, queue=queue)
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
            min_value=1,
            max_value=MAX_INT64,
            required=False,
            allow_null=True,
            default=None,
            help_text="At most this many (default: all of them).",
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
            400: problem("invalid_request: a field is invalid, or to is no other queue"),
        },
        description="Moves dead letters back, without their op-* attributes (manage scope).",
    )
    def post(self, request: Request, queue: Queue) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.require_queues(data.validated_data["to"])
        result = services.queue_redrive(
            tenant=self.tenant,
            actor=self.principal.actor,
            queue=queue,
            may_target=lambda name: self.principal.may_access("queue", name),
            **data.validated_data,
        )
        return Response(result)


class QueuePeekView(QueueView):
    """``GET /v1/queues/{queue}/messages`` (POST on that path is the publish view)."""

    scope_map = {"GET": "consume"}

    class QuerySerializer(serializers.Serializer[Any]):
        limit = QueryIntegerField(
            min_value=1,
            max_value=PEEK_MAX,
            default=PEEK_DEFAULT,
            help_text=f"1..{PEEK_MAX}, default {PEEK_DEFAULT}.",
        )
        after = OffsetField(required=False, help_text="Start after this offset (a page's next).")

    @extend_schema(
        operation_id="queues_messages_peek",
        parameters=[QuerySerializer],
        responses={
            200: inline_serializer(
                "QueuePeek",
                {
                    "messages": PeekedMessageSerializer(many=True),
                    "next": OffsetOutField(
                        allow_null=True, help_text="Pass as after for the next page."
                    ),
                },
            ),
        },
        description="The queue's stored messages in order, with their state; leases nothing.",
    )
    def get(self, request: Request, queue: Queue) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = selectors.queue_peek(
            queue, limit=query.validated_data["limit"], after=query.validated_data.get("after")
        )
        return Response(page)
