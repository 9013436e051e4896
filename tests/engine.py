"""The message engine, driven from sync tests.

The engine's entry points are coroutines (``apublish``, ``apull``, ``asettle``) that call
Redis through the running loop's script lane. A sync test runs them with :func:`run`, on an
event loop of its thread that outlives the call, so consecutive calls share one lane and one
connection as the API's would. Messages go in and out here, not through the API under test,
with an explicit clock where leases have to expire.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson

from kernel.redis_client import get_redis
from queues import selectors
from queues.engine import dataplane
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import (
    Consumer,
    Destination,
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from tests.factories import TenantCtx

T = TypeVar("T")
MAX_BYTES = 262144

_thread = threading.local()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one engine coroutine to its end from sync code (never from a running loop)."""
    loop = getattr(_thread, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


# --- the rows' engine views ------------------------------------------------------------------


def queue_writer(ctx: TenantCtx, name: str) -> Destination:
    queue = selectors.queue_get(tenant=ctx.tenant, name=name)
    return queue_destination(str(ctx.tenant.id), selectors.queue_document(queue))


def topic_writer(ctx: TenantCtx, name: str) -> Destination:
    topic = selectors.topic_get(tenant=ctx.tenant, name=name)
    return topic_destination(str(ctx.tenant.id), selectors.topic_document(topic))


def queue_reader(ctx: TenantCtx, name: str) -> Consumer:
    queue = selectors.queue_get(tenant=ctx.tenant, name=name)
    return queue_consumer(str(ctx.tenant.id), selectors.queue_document(queue))


def subscription_reader(ctx: TenantCtx, name: str) -> Consumer:
    sub = selectors.subscription_get(tenant=ctx.tenant, name=name)
    return subscription_consumer(str(ctx.tenant.id), selectors.subscription_document(sub))


def redis_keys_of(resource_id: str) -> list[bytes]:
    """Every Redis key that belongs to the queue, topic or subscription with this id."""
    return sorted(get_redis().keys(f"*{resource_id.replace('-', '')}*"))


# --- publish, pull, settle -------------------------------------------------------------------


def publish(
    dest: Destination,
    *messages: dict[str, Any],
    now: int | None = None,
    limits: dataplane.Limits = dataplane.NO_LIMITS,
) -> list[dict[str, Any]]:
    """Validate ``messages`` as a publish request's batch and store them at ``now``."""
    now = now_ms() if now is None else now
    batch = validate_batch({"messages": list(messages)}, max_message_bytes=MAX_BYTES, now_ms=now)
    return run(dataplane.apublish(dest, batch, now, limits))


def publish_to_queue(
    ctx: TenantCtx, name: str, *messages: dict[str, Any], now: int | None = None
) -> list[dict[str, Any]]:
    return publish(queue_writer(ctx, name), *messages, now=now)


def publish_to_topic(
    ctx: TenantCtx, name: str, *messages: dict[str, Any], now: int | None = None
) -> list[dict[str, Any]]:
    return publish(topic_writer(ctx, name), *messages, now=now)


def pull(
    consumer: Consumer, count: int = 100, now: int | None = None, **options: Any
) -> list[dict[str, Any]]:
    """The messages a pull at ``now`` leases (``options``: visibility_ms)."""
    now = now_ms() if now is None else now
    return run(dataplane.apull(consumer, count=count, now_ms=now, **options)).messages


def settle(
    consumer: Consumer, mode: str, ack_ids: list[str], *, ms: int = 0, now: int | None = None
) -> tuple[int, list[str]]:
    """How many of ``ack_ids`` an ack, nack or deadline change settled, and the stale ones."""
    now = now_ms() if now is None else now
    return run(dataplane.asettle(consumer, mode, ack_ids, ms=ms, now_ms=now))


def ack(consumer: Consumer, messages: list[dict[str, Any]]) -> int:
    """Ack delivered ``messages``, none of them stale; returns how many were acked."""
    acked, stale = settle(consumer, "ack", [m["ack_id"] for m in messages])
    assert stale == []
    return acked


def bodies(messages: list[dict[str, Any]]) -> list[Any]:
    """The bodies of delivered messages (the engine splices them in as JSON fragments)."""
    return [orjson.loads(orjson.dumps(m["body"])) for m in messages]
