"""Builders and engine shortcuts for the queue, topic and subscription API tests.

Rows are made by the services (not the API under test); messages go in and out through the
engine directly, with an explicit clock where leases have to expire.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.http import HttpResponse
from django.test import Client

from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine import dataplane
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import (
    Consumer,
    queue_consumer,
    queue_destination,
    queue_keys,
    subscription_consumer,
    topic_destination,
)
from queues.models import Queue, Subscription, Topic
from tests.conftest import TenantCtx

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
MAX_BYTES = 262144


def patch_json(client: Client, path: str, data: Any) -> HttpResponse:
    return client.patch(path, data=orjson.dumps(data), content_type="application/json")


def untimed(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without created_at / updated_at, after checking they are RFC 3339 UTC."""
    assert RFC3339_UTC.match(body["created_at"]), body
    assert RFC3339_UTC.match(body["updated_at"]), body
    return {k: v for k, v in body.items() if k not in ("created_at", "updated_at")}


def field_errors(body: dict[str, Any]) -> set[str]:
    """The fields a problem's ``errors`` name."""
    return {item.get("field", "") for item in body.get("errors", [])}


# --- rows ------------------------------------------------------------------------------------


def make_queue(ctx: TenantCtx, name: str = "orders", **options: Any) -> Queue:
    return services.queue_create(tenant=ctx.tenant, actor="test", name=name, **options)


def make_topic(ctx: TenantCtx, name: str = "events", **options: Any) -> Topic:
    return services.topic_create(tenant=ctx.tenant, actor="test", name=name, **options)


def make_subscription(
    ctx: TenantCtx, name: str = "audit", topic: str = "events", **options: Any
) -> Subscription:
    return services.subscription_create(
        tenant=ctx.tenant, actor="test", name=name, topic=topic, **options
    )


def queue_row(ctx: TenantCtx, name: str) -> Queue:
    return selectors.queue_get(tenant=ctx.tenant, name=name)


def queue_names(ctx: TenantCtx) -> list[str]:
    return sorted(Queue.objects.for_tenant(ctx.tenant).values_list("name", flat=True))


def stream_key(ctx: TenantCtx, name: str) -> str:
    return queue_keys(str(ctx.tenant.id), str(queue_row(ctx, name).id))["stream"]


# --- the engine ------------------------------------------------------------------------------


def queue_reader(ctx: TenantCtx, name: str) -> Consumer:
    return queue_consumer(str(ctx.tenant.id), selectors.queue_document(queue_row(ctx, name)))


def subscription_reader(ctx: TenantCtx, name: str) -> Consumer:
    sub = selectors.subscription_get(tenant=ctx.tenant, name=name)
    return subscription_consumer(str(ctx.tenant.id), selectors.subscription_document(sub))


def publish_to_queue(
    ctx: TenantCtx, name: str, *messages: dict[str, Any], now: int | None = None
) -> list[dict[str, Any]]:
    now = now_ms() if now is None else now
    doc = selectors.queue_document(queue_row(ctx, name))
    batch = validate_batch({"messages": list(messages)}, max_message_bytes=MAX_BYTES, now_ms=now)
    return dataplane.publish(get_redis(), queue_destination(str(ctx.tenant.id), doc), batch, now)


def publish_to_topic(
    ctx: TenantCtx, name: str, *messages: dict[str, Any], now: int | None = None
) -> list[dict[str, Any]]:
    now = now_ms() if now is None else now
    doc = selectors.topic_document(selectors.topic_get(tenant=ctx.tenant, name=name))
    batch = validate_batch({"messages": list(messages)}, max_message_bytes=MAX_BYTES, now_ms=now)
    return dataplane.publish(get_redis(), topic_destination(str(ctx.tenant.id), doc), batch, now)


def pull(consumer: Consumer, count: int = 100, now: int | None = None) -> list[dict[str, Any]]:
    now = now_ms() if now is None else now
    return dataplane.pull(get_redis(), consumer, count=count, now_ms=now).messages


def ack(consumer: Consumer, messages: list[dict[str, Any]]) -> int:
    acked, stale = dataplane.settle(
        get_redis(), consumer, "ack", [m["ack_id"] for m in messages], ms=0, now_ms=now_ms()
    )
    assert stale == []
    return acked


def bodies(messages: list[dict[str, Any]]) -> list[Any]:
    """The bodies of delivered messages (the engine splices them in as JSON fragments)."""
    return [orjson.loads(orjson.dumps(m["body"])) for m in messages]
