"""The data plane's REST endpoints: publish, pull, ack, nack and modify-deadline.

These views run on the event loop and, when warm, make no PostgreSQL query: the API key and
the tenant's limits come from the hot cache, the gate (api.views.base) resolves the queue,
topic or subscription from it, and the handler reads the request and makes one call of the
data-plane service (queues.messaging), which is one Lua script call (a publish is one Redis
round trip) or, for a pull with ``wait_seconds``, the long poll.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, ClassVar, Literal, cast

from asgiref.sync import sync_to_async
from django.core.validators import RegexValidator
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import (
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers

from api.errors import platform_error_response
from api.schema import TEXT_PATTERN, attributes_schema, problem
from api.views.base import AsyncTenantAPIView, json_response, read_json
from api.views.queues import OffsetOutField, QueuePeekView, StrictSerializer
from api.views.topics import TopicLogView
from kernel import limits
from kernel.errors import InvalidRequest, PlatformError
from kernel.limits import (
    ACK_ID_PATTERN,
    MAX_BATCH,
    MAX_DEDUP_ID,
    MAX_DELAY_SECONDS,
    MAX_KEY_LENGTH,
    MAX_VISIBILITY_TIMEOUT,
    RESERVED_ATTRIBUTE_PREFIX,
)
from queues import messaging
from tenants.principals import Principal

_queue_peek = QueuePeekView.as_view()
_topic_log = TopicLogView.as_view()

MAX_WAIT_SECONDS = limits.MAX_WAIT_SECONDS
DEFAULT_MAX_MESSAGES = limits.DEFAULT_PULL


# --- schema shapes ----------------------------------------------------------------------------


# Exactly what base64.b64decode(validate=True) takes: the standard alphabet, padded.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


@extend_schema_field(attributes_schema(reserved_prefix=RESERVED_ATTRIBUTE_PREFIX))
class AttributesField(serializers.DictField):
    """Up to 32 string attributes; names of 1 to 128 characters, not starting ``op-``."""


class JsonMessageInSerializer(StrictSerializer):
    """A message with a JSON body."""

    body = serializers.JSONField(allow_null=True, help_text="Any JSON value, stored exactly.")
    attributes = AttributesField(required=False, allow_null=True)
    key = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=MAX_KEY_LENGTH,
        validators=[RegexValidator(TEXT_PATTERN)],
        help_text="On topics it picks the partition (same key, same partition).",
    )
    delay_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_DELAY_SECONDS
    )
    dedup_id = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=MAX_DEDUP_ID,
        validators=[RegexValidator(TEXT_PATTERN)],
        help_text="A repeat within 5 minutes is not stored again.",
    )

    class Meta:
        ref_name = "JsonMessageIn"


class BinaryMessageInSerializer(JsonMessageInSerializer):
    """A message with a binary body."""

    body = None  # type: ignore[assignment]
    body_base64 = serializers.CharField(
        allow_blank=True,
        validators=[RegexValidator(BASE64_PATTERN)],
        help_text="A binary payload, base64 (standard alphabet, padded).",
    )

    class Meta:
        ref_name = "BinaryMessageIn"


MESSAGE_IN = PolymorphicProxySerializer(
    component_name="MessageIn",
    serializers=[JsonMessageInSerializer, BinaryMessageInSerializer],
    resource_type_field_name=None,
)


class PublishBatchSerializer(StrictSerializer):
    messages = serializers.ListField(child=MESSAGE_IN, min_length=1, max_length=MAX_BATCH)

    class Meta:
        ref_name = "PublishBatch"


PUBLISH_IN = PolymorphicProxySerializer(
    component_name="Publish",
    serializers=[JsonMessageInSerializer, BinaryMessageInSerializer, PublishBatchSerializer],
    resource_type_field_name=None,
)


@extend_schema_field({"type": "string", "pattern": ACK_ID_PATTERN})
class AckIdField(serializers.CharField):
    pass


class PublishedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    partition = serializers.IntegerField()
    offset = OffsetOutField(allow_null=True, help_text="null while the message is delayed")
    duplicate = serializers.BooleanField()


class MessageOutSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    ack_id = AckIdField()
    body = serializers.JSONField(required=False, allow_null=True, help_text="A JSON body.")
    body_base64 = serializers.CharField(
        required=False, allow_blank=True, help_text="A binary body."
    )
    attributes = serializers.DictField(child=serializers.CharField(allow_blank=True))
    key = serializers.CharField(allow_null=True)
    publish_time = serializers.DateTimeField()
    delivery_attempt = serializers.IntegerField()
    partition = serializers.IntegerField()
    offset = OffsetOutField()


PUBLISHED = inline_serializer("PublishResult", {"messages": PublishedSerializer(many=True)})
PULLED = inline_serializer("PullResult", {"messages": MessageOutSerializer(many=True)})
# api.schema adds the errors every operation of their shape can answer
PUBLISH_ERRORS = {
    403: problem(
        "forbidden (scope, resource) or quota_exceeded (monthly messages of the tenant or the "
        "key, the queue's or topic's backlog); nothing stored"
    ),
    429: problem(
        "rate_limited: the publish rate of the tenant or the key, or the tenant's request rate, "
        "is used up for this second; see Retry-After and RateLimit; nothing stored"
    ),
    413: problem("payload_too_large: a message is over the tenant's size limit; none stored"),
}
CONSUME_ERRORS: dict[int, Any] = {
    429: problem(
        "rate_limited: the consume rate of the tenant or the key (pull), or the tenant's request "
        "rate, is used up for this second; see Retry-After and RateLimit; nothing done"
    ),
}


async def with_rate_limit(call: Awaitable[HttpResponse]) -> HttpResponse:
    """``call``'s response with the RateLimit header fields of its data-plane call (see
    queues.messaging.rate_limit_headers), on a success and on a refusal by a limit alike.
    The data-plane app (api.asgi) and Django's handler both serve these views, so both
    answers carry them."""
    messaging.rate_limit_reset()
    try:
        response = await call
    except PlatformError as exc:
        headers = messaging.rate_limit_headers()
        if not headers:
            raise
        response = platform_error_response(exc)
    else:
        headers = messaging.rate_limit_headers()
    for name, value in headers.items():
        response[name] = value
    return response


class PullInSerializer(StrictSerializer):
    max_messages = serializers.IntegerField(
        min_value=1, max_value=limits.MAX_PULL, default=DEFAULT_MAX_MESSAGES
    )
    wait_seconds = serializers.IntegerField(min_value=0, max_value=MAX_WAIT_SECONDS, default=0)
    visibility_timeout = serializers.IntegerField(
        min_value=0,
        max_value=MAX_VISIBILITY_TIMEOUT,
        required=False,
        help_text="Default: the queue's or subscription's.",
    )

    class Meta:
        ref_name = "PullIn"


class AckInSerializer(StrictSerializer):
    ack_ids = serializers.ListField(child=AckIdField(), min_length=1, max_length=limits.MAX_ACK_IDS)

    class Meta:
        ref_name = "AckIn"


class NackInSerializer(AckInSerializer):
    delay_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_VISIBILITY_TIMEOUT,
        required=False,
        help_text="Default: the retry backoff policy.",
    )

    class Meta:
        ref_name = "NackIn"


class DeadlineInSerializer(AckInSerializer):
    seconds = serializers.IntegerField(min_value=0, max_value=MAX_VISIBILITY_TIMEOUT)

    class Meta:
        ref_name = "DeadlineIn"


ACKED = inline_serializer(
    "AckResult",
    {
        "acked": serializers.IntegerField(),
        "stale": serializers.ListField(child=serializers.CharField()),
    },
)
NACKED = inline_serializer(
    "NackResult",
    {
        "nacked": serializers.IntegerField(),
        "stale": serializers.ListField(child=serializers.CharField()),
    },
)
MODIFIED = inline_serializer(
    "ModifyDeadlineResult",
    {
        "modified": serializers.IntegerField(),
        "stale": serializers.ListField(child=serializers.CharField()),
    },
)


# --- request helpers --------------------------------------------------------------------------


def _int_field(
    body: dict[str, Any], name: str, low: int, high: int, default: int | None
) -> int | None:
    """``body[name]``, an integer from ``low`` to ``high``; ``default`` when it is absent.
    An explicit null is not absence: the contract's fields are integers, so it is a 400."""
    if name not in body:
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}.",
            errors=[{"field": name, "detail": f"An integer from {low} to {high}."}],
        )
    return value


def _object(body: Any, allowed: set[str]) -> dict[str, Any]:
    """The request body as a closed JSON object: a 400 naming every field it does not know."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(body.keys() - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown field '{unknown[0]}'.",
            errors=[{"field": name, "detail": "Unknown field."} for name in unknown],
        )
    return body


# --- publish ----------------------------------------------------------------------------------


async def _publish(
    principal: Principal, kind: Literal["queue", "topic"], doc: dict[str, Any], body: Any
) -> HttpResponse:
    result = await messaging.publish(principal, kind, doc, body)
    return json_response({"messages": result}, status=201)


class QueuePublishView(AsyncTenantAPIView):
    scope_map = {"POST": "publish", "GET": "consume"}
    resource_kind = "queue"

    @extend_schema(
        operation_id="queue_messages_publish",
        request=PUBLISH_IN,
        responses={201: PUBLISHED, **PUBLISH_ERRORS},
        description=(
            "Publish one message (the body is a message object) or a batch "
            '(`{"messages": [...]}`, 1..100). All or nothing: an invalid message rejects the '
            "whole request and nothing is stored. A 201 means every message is in Redis."
        ),
    )
    async def post(
        self, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        # exact: a body is delivered as the JSON value it came as, every number intact
        body = read_json(request, exact=True)
        return await with_rate_limit(_publish(principal, "queue", resource, body))

    async def get(
        self, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        """GET on this path is the peek (a control-plane read), served by its own view."""
        return await sync_to_async(_queue_peek)(request, queue=resource["name"])

    get.kwargs = QueuePeekView.get.kwargs  # type: ignore[attr-defined]  # its OpenAPI operation


class TopicPublishView(AsyncTenantAPIView):
    scope_map = {"POST": "publish", "GET": "consume"}
    resource_kind = "topic"

    @extend_schema(
        operation_id="topic_messages_publish",
        request=PUBLISH_IN,
        responses={201: PUBLISHED, **PUBLISH_ERRORS},
        description=(
            "Publish to a topic: every subscription receives each message that matches its "
            "filter. A message's key picks its partition (same key, same partition, in order)."
        ),
    )
    async def post(
        self, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        body = read_json(request, exact=True)
        return await with_rate_limit(_publish(principal, "topic", resource, body))

    async def get(
        self, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        """GET on this path reads the log by offset, served by its own view."""
        return await sync_to_async(_topic_log)(request, topic=resource["name"])

    get.kwargs = TopicLogView.get.kwargs  # type: ignore[attr-defined]  # its OpenAPI operation


# --- pull -------------------------------------------------------------------------------------


async def _pull(
    request: HttpRequest, principal: Principal, kind: messaging.ConsumerKind, doc: dict[str, Any]
) -> HttpResponse:
    body = _object(read_json(request), {"max_messages", "wait_seconds", "visibility_timeout"})
    count = _int_field(body, "max_messages", 1, limits.MAX_PULL, DEFAULT_MAX_MESSAGES)
    wait = _int_field(body, "wait_seconds", 0, MAX_WAIT_SECONDS, 0)
    visibility = _int_field(body, "visibility_timeout", 0, MAX_VISIBILITY_TIMEOUT, None)
    messages = await messaging.pull(
        principal,
        kind,
        doc,
        count=count or DEFAULT_MAX_MESSAGES,
        wait_seconds=wait or 0,
        visibility_ms=None if visibility is None else visibility * 1000,
    )
    return json_response({"messages": messages})


PULL_DESCRIPTION = (
    "Lease up to max_messages for the visibility timeout. With wait_seconds > 0 the call "
    "returns as soon as a message is available, or with an empty list when the wait ends."
)


# --- ack, nack, modify-deadline ---------------------------------------------------------------


async def _settle(
    request: HttpRequest,
    principal: Principal,
    kind: messaging.ConsumerKind,
    doc: dict[str, Any],
    mode: messaging.SettleMode,
) -> HttpResponse:
    if mode == "ack":
        body = _object(read_json(request), {"ack_ids"})
        ms = 0
    elif mode == "nack":
        body = _object(read_json(request), {"ack_ids", "delay_seconds"})
        delay = _int_field(body, "delay_seconds", 0, MAX_VISIBILITY_TIMEOUT, None)
        ms = -1 if delay is None else delay * 1000
    else:
        body = _object(read_json(request), {"ack_ids", "seconds"})
        if "seconds" not in body:
            raise InvalidRequest(
                "seconds is required.", errors=[{"field": "seconds", "detail": "Required."}]
            )
        ms = (_int_field(body, "seconds", 0, MAX_VISIBILITY_TIMEOUT, None) or 0) * 1000
    ack_ids = body.get("ack_ids")
    settled, stale = await messaging.settle(principal, kind, doc, mode, ack_ids, ms=ms)
    word = {"ack": "acked", "nack": "nacked", "deadline": "modified"}[mode]
    return json_response({word: settled, "stale": stale})


ACK_DESCRIPTION = (
    "Acknowledge leased messages. An ack id whose lease expired (the message may be with "
    "another consumer now) is returned in `stale` and changes nothing; acking twice is harmless."
)
NACK_DESCRIPTION = (
    "Return leased messages: they are deliverable again after delay_seconds (default: the "
    "retry backoff policy), or go to the dead-letter queue at max_delivery_attempts."
)
DEADLINE_DESCRIPTION = "Extend or shorten leases; 0 makes the messages deliverable now."


# --- the consumer views: one class per verb and kind, for distinct OpenAPI operations ---------


class ConsumerView(AsyncTenantAPIView):
    """POST .../{queue|subscription}/{pull|ack|nack|modify-deadline}."""

    scope_map = {"POST": "consume"}
    resource_kind: ClassVar[messaging.ConsumerKind]  # also the URL's parameter name
    verb: ClassVar[str]  # "pull" | "ack" | "nack" | "deadline"

    async def post(
        self, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        if self.verb == "pull":
            return await with_rate_limit(_pull(request, principal, self.resource_kind, resource))
        mode = cast(messaging.SettleMode, self.verb)
        return await with_rate_limit(
            _settle(request, principal, self.resource_kind, resource, mode)
        )


_VERBS: dict[str, tuple[str, type[serializers.Serializer[Any]], Any, str]] = {
    "pull": ("pull", PullInSerializer, PULLED, PULL_DESCRIPTION),
    "ack": ("ack", AckInSerializer, ACKED, ACK_DESCRIPTION),
    "nack": ("nack", NackInSerializer, NACKED, NACK_DESCRIPTION),
    "deadline": ("modify_deadline", DeadlineInSerializer, MODIFIED, DEADLINE_DESCRIPTION),
}


def consumer_view(kind: str, verb: str) -> type[ConsumerView]:
    """The view class of one verb on one kind, with its own OpenAPI operation."""
    operation, request, response, description = _VERBS[verb]

    # A method of the class's own (not extend_schema_view, whose wrapper is not a coroutine
    # function and would make Django treat the view as synchronous).
    async def post(
        self: ConsumerView, request: HttpRequest, principal: Principal, resource: dict[str, Any]
    ) -> HttpResponse:
        return await ConsumerView.post(self, request, principal, resource)

    schema = extend_schema(
        operation_id=f"{kind}_{operation}",
        request=request,
        responses={200: response, **CONSUME_ERRORS},
        description=description,
    )
    return type(
        f"{kind.title()}{operation.title().replace('_', '')}View",
        (ConsumerView,),
        {
            "resource_kind": kind,
            "verb": verb,
            "may_wait": verb == "pull",  # a long poll: api.asgi cancels it if the client leaves
            "__doc__": description,
            "post": schema(post),
        },
    )


QueuePullView = consumer_view("queue", "pull")
QueueAckView = consumer_view("queue", "ack")
QueueNackView = consumer_view("queue", "nack")
QueueModifyDeadlineView = consumer_view("queue", "deadline")
SubscriptionPullView = consumer_view("subscription", "pull")
SubscriptionAckView = consumer_view("subscription", "ack")
SubscriptionNackView = consumer_view("subscription", "nack")
SubscriptionModifyDeadlineView = consumer_view("subscription", "deadline")
