"""The data-plane service: publish, pull (with the long-poll loop), ack, nack and
modify-deadline, for the REST API today and for every other front end (the console, the SQS
endpoint) tomorrow.

A caller first resolves the resource with :func:`resolve` (the API's tenant gate does it
before any handler runs): the document comes from the hot cache, so a warm request makes no
PostgreSQL query, and each operation below is one Lua script call (a publish is one Redis
round trip). When a script finds the resource's Redis structures gone (the cached copy was
stale, or Redis lost them), the operation looks the resource up in PostgreSQL once
(:func:`queues.services.resource_repair`), checks the key again against what it finds, and
runs once more; a Gone script changed nothing, so the retry never doubles anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from asgiref.sync import sync_to_async

from kernel.errors import NotFound
from queues.engine import dataplane
from queues.engine.messages import Outgoing, now_ms, validate_batch
from queues.engine.targets import (
    Consumer,
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from queues.engine.waiters import get_notifier
from queues.selectors import aresource_doc
from queues.services import resource_repair
from tenants.principals import Principal

T = TypeVar("T")
Kind = Literal["queue", "topic", "subscription"]
ConsumerKind = Literal["queue", "subscription"]
SettleMode = Literal["ack", "nack", "deadline"]


def require_access(principal: Principal, kind: str, doc: dict[str, Any]) -> None:
    """403 unless the key's patterns cover the resource of ``doc``; a subscription is also
    covered by its topic's pattern (a key for ``topic:orders*`` consumes their subscriptions)."""
    topic = doc["topic"]["name"] if kind == "subscription" else None
    principal.require_access(kind, doc["name"], topic=topic)


async def resolve(principal: Principal, kind: Kind, name: str) -> dict[str, Any]:
    """The tenant's ``kind`` ``name`` as its cached document: 404 when the tenant has none
    (another tenant's included), then 403 when the key does not cover it."""
    doc = await aresource_doc(principal.tenant_id, kind, name)
    require_access(principal, kind, doc)
    return doc


async def _with_current(
    principal: Principal,
    kind: Kind,
    doc: dict[str, Any],
    call: Callable[[dict[str, Any]], Awaitable[T]],
) -> T:
    """``call(doc)``; on Gone, once more with the resource as PostgreSQL has it, or a 404."""
    try:
        return await call(doc)
    except dataplane.Gone:
        current = await sync_to_async(resource_repair)(
            tenant_id=principal.tenant_id, kind=kind, name=doc["name"]
        )
        if current is None:
            raise NotFound(f"No such {kind}.") from None
        require_access(principal, kind, current)  # a name taken again may now be another's
        return await call(current)


# --- limits -----------------------------------------------------------------------------------


def limits_of(principal: Principal) -> dataplane.Limits:
    """The limits a call of ``principal`` meets, from the cached tenant and key documents
    (tenants.principals: the tenant's effective quotas, the key's own limits). A document
    cached before a quota existed lacks it: unlimited until it is pushed again."""
    tenant = principal.tenant
    key = principal.key_limits
    return dataplane.Limits(
        per_second=tenant.get("publish_rate_per_second"),
        per_month=tenant.get("monthly_messages"),
        consume_per_second=tenant.get("consume_rate_per_second"),
        requests_per_second=tenant.get("request_rate_per_second"),
        key=principal.prefix,
        key_per_second=key.get("publish_rate_per_second"),
        key_per_month=key.get("monthly_messages"),
        key_consume_per_second=key.get("consume_rate_per_second"),
        max_backlog_messages=tenant.get("max_backlog_messages"),
        max_backlog_bytes=tenant.get("max_backlog_bytes"),
        request=True,
    )


def rate_limit_headers() -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` header fields of this task's latest
    data-plane call (publish, pull, ack, nack, modify-deadline; answered or refused): the
    limit nearest to exhaustion among those that applied, or none when no limit applied.
    Call :func:`rate_limit_reset` before the call."""
    state = dataplane.RATE_LIMIT.get()
    return state.headers() if state is not None else {}


def rate_limit_reset() -> None:
    """Forget the latest call's rate-limit state (a request starts afresh)."""
    dataplane.RATE_LIMIT.set(None)


# --- publish ----------------------------------------------------------------------------------


async def publish(
    principal: Principal, kind: Literal["queue", "topic"], doc: dict[str, Any], body: Any
) -> list[dict[str, Any]]:
    """Store one message (``body`` is a message object) or a batch (``{"messages": [...]}``),
    all or nothing: an invalid message is a 400 (413 over the tenant's size limit) and
    nothing is stored. Returns per message its id, partition, offset (None while delayed) and
    whether it repeated a dedup id of the window. The limits (:func:`limits_of`: publish and
    request rates, monthly messages, the resource's backlog) are checked in the same script:
    RateLimited / QuotaExceeded, and nothing stored or counted."""
    now = now_ms()
    tenant = principal.tenant
    messages: Sequence[Outgoing] = validate_batch(
        body, max_message_bytes=tenant["max_message_bytes"], now_ms=now
    )
    limits = limits_of(principal)
    destination = queue_destination if kind == "queue" else topic_destination

    async def store(current: dict[str, Any]) -> list[dict[str, Any]]:
        return await dataplane.apublish(
            destination(principal.tenant_id, current), messages, now, limits
        )

    return await _with_current(principal, kind, doc, store)


# --- pull -------------------------------------------------------------------------------------


def consumer_of(principal: Principal, kind: ConsumerKind, doc: dict[str, Any]) -> Consumer:
    """The engine's view of a queue or subscription document."""
    if kind == "queue":
        return queue_consumer(principal.tenant_id, doc)
    return subscription_consumer(principal.tenant_id, doc)


async def pull(
    principal: Principal,
    kind: ConsumerKind,
    doc: dict[str, Any],
    *,
    count: int,
    wait_seconds: int = 0,
    visibility_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Lease up to ``count`` messages for ``visibility_ms`` (default: the resource's), waiting
    up to ``wait_seconds`` for the first one; an empty list when the wait ends with none."""

    limits = limits_of(principal)

    async def lease(current: dict[str, Any]) -> list[dict[str, Any]]:
        return await pull_messages(
            consumer_of(principal, kind, current),
            count=count,
            wait_seconds=wait_seconds,
            visibility_ms=visibility_ms,
            limits=limits,
        )

    return await _with_current(principal, kind, doc, lease)


async def pull_messages(
    consumer: Consumer,
    *,
    count: int,
    wait_seconds: int,
    visibility_ms: int | None,
    limits: dataplane.Limits = dataplane.NO_LIMITS,
) -> list[dict[str, Any]]:
    """The long poll: lease up to ``count`` messages, waiting up to ``wait_seconds`` for the
    first one. The wait sleeps on the publish script's announcement (queues.engine.waiters),
    so a message is handed out as soon as it is stored, not at the next tick of a timer.

    The first pull is the request (counted, and checked against the request rate); the
    pulls of the wait are not, but each leases within the consume rates: one that finds
    them used up ends the wait with RateLimited (nothing leased)."""
    pulled = await dataplane.apull(
        consumer, count=count, now_ms=now_ms(), visibility_ms=visibility_ms, limits=limits
    )
    if pulled.messages or wait_seconds <= 0:
        return pulled.messages
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    later = dataclasses.replace(limits, request=False, requests_per_second=None)
    async with get_notifier().watch(consumer.channel) as waiter:
        while True:
            # Pull again now that the subscription is confirmed: a publish between the first
            # pull and the subscription would otherwise go unheard.
            mark = waiter.mark()
            now = now_ms()
            pulled = await dataplane.apull(
                consumer, count=count, now_ms=now, visibility_ms=visibility_ms, limits=later
            )
            remaining = deadline - loop.time()
            if pulled.messages or remaining <= 0:
                return pulled.messages
            if waiter.changed(mark):
                continue  # something was published while this pull ran
            if pulled.next_due_ms is not None:
                # a delayed message, an expiring lease or a backoff ends before the wait does
                remaining = min(remaining, max(pulled.next_due_ms - now, 0) / 1000 + 0.002)
            await waiter.park(remaining)


# --- ack, nack, modify-deadline ---------------------------------------------------------------


async def settle(
    principal: Principal,
    kind: ConsumerKind,
    doc: dict[str, Any],
    mode: SettleMode,
    ack_ids: Any,
    *,
    ms: int = 0,
) -> tuple[int, list[str]]:
    """Settle leases by ack id: ``ack`` deletes the messages, ``nack`` makes them deliverable
    again after ``ms`` (-1: the retry backoff policy; at max_delivery_attempts they go to the
    dead-letter queue), ``deadline`` moves the lease's end to now + ``ms``. Returns how many
    were settled and the ack ids whose lease had already ended (those change nothing). A
    malformed ack id is a 400 and nothing is settled; past the tenant's request rate,
    RateLimited and nothing settled or counted."""

    limits = limits_of(principal)

    async def apply(current: dict[str, Any]) -> tuple[int, list[str]]:
        consumer = consumer_of(principal, kind, current)
        return await dataplane.asettle(
            consumer, mode, ack_ids, ms=ms, now_ms=now_ms(), limits=limits
        )

    return await _with_current(principal, kind, doc, apply)
