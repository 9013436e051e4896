"""Reads of topics, queues and subscriptions, always within one tenant: their rows, the
documents the hot cache serves to the data plane, and what Redis holds of them (live stats,
a queue's messages, a topic's log). The API and the console both read through here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet

from kernel.errors import InvalidRequest, NotFound
from kernel.hotcache import HotCache, register
from kernel.redis_client import get_redis
from queues.engine import streams
from queues.engine.messages import now_ms
from queues.engine.targets import queue_consumer, subscription_consumer
from queues.models import Queue, Subscription, Topic
from tenants.models import Tenant
from tenants.principals import Principal


def queue_document(queue: Queue) -> dict[str, Any]:
    dlq = queue.dead_letter_queue
    return {
        "kind": "queue",
        "id": str(queue.id),
        "name": queue.name,
        "visibility_timeout": queue.visibility_timeout,
        "delay_seconds": queue.delay_seconds,
        "retention_seconds": queue.retention_seconds,
        "max_delivery_attempts": queue.max_delivery_attempts,
        "dlq": {"id": str(dlq.id), "name": dlq.name} if dlq else None,
        "backoff": [queue.retry_backoff_min, queue.retry_backoff_max],
    }


def topic_document(topic: Topic) -> dict[str, Any]:
    return {
        "kind": "topic",
        "id": str(topic.id),
        "name": topic.name,
        "partitions": topic.partitions,
        "retention_seconds": topic.retention_seconds,
    }


def subscription_document(sub: Subscription) -> dict[str, Any]:
    dlq = sub.dead_letter_queue
    return {
        "kind": "subscription",
        "id": str(sub.id),
        "name": sub.name,
        "topic": {
            "id": str(sub.topic.id),
            "name": sub.topic.name,
            "partitions": sub.topic.partitions,
        },
        "visibility_timeout": sub.visibility_timeout,
        "max_delivery_attempts": sub.max_delivery_attempts,
        "dlq": {"id": str(dlq.id), "name": dlq.name} if dlq else None,
        "backoff": [sub.retry_backoff_min, sub.retry_backoff_max],
        "filter": sub.filter_attributes or {},
    }


def _load_resource(ident: str) -> dict[str, Any] | None:
    tenant_id, kind, name = ident.split(":", 2)
    if kind == "queue":
        queue = (
            Queue.objects.for_tenant(tenant_id)
            .select_related("dead_letter_queue")
            .filter(name=name)
            .first()
        )
        return queue_document(queue) if queue else None
    if kind == "topic":
        topic = Topic.objects.for_tenant(tenant_id).filter(name=name).first()
        return topic_document(topic) if topic else None
    if kind == "subscription":
        sub = (
            Subscription.objects.for_tenant(tenant_id)
            .select_related("topic", "dead_letter_queue")
            .filter(name=name)
            .first()
        )
        return subscription_document(sub) if sub else None
    return None


resource_cache = register(HotCache("res", _load_resource))


def resource_ident(tenant_id: str, kind: str, name: str) -> str:
    return f"{tenant_id}:{kind}:{name}"


def resource_doc(tenant_id: str, kind: str, name: str) -> dict[str, Any]:
    """The cached document of a queue, topic or subscription; NotFound when there is none
    (in particular for another tenant's: the tenant is part of the cache key)."""
    doc = resource_cache.get(resource_ident(tenant_id, kind, name))
    if doc is None:
        raise NotFound(f"No such {kind}.")
    return doc


async def aresource_doc(tenant_id: str, kind: str, name: str) -> dict[str, Any]:
    doc = await resource_cache.aget(resource_ident(tenant_id, kind, name))
    if doc is None:
        raise NotFound(f"No such {kind}.")
    return doc


def queue_list(*, tenant: Tenant | str) -> QuerySet[Queue]:
    return Queue.objects.for_tenant(tenant).select_related("dead_letter_queue")


def topic_list(*, tenant: Tenant | str) -> QuerySet[Topic]:
    return Topic.objects.for_tenant(tenant)


def subscription_list(*, tenant: Tenant | str) -> QuerySet[Subscription]:
    return Subscription.objects.for_tenant(tenant).select_related("topic", "dead_letter_queue")


def queue_get(*, tenant: Tenant, name: str) -> Queue:
    try:
        return queue_list(tenant=tenant).get(name=name)
    except Queue.DoesNotExist as exc:
        raise NotFound("No such queue.") from exc


def topic_get(*, tenant: Tenant, name: str) -> Topic:
    try:
        return topic_list(tenant=tenant).get(name=name)
    except Topic.DoesNotExist as exc:
        raise NotFound("No such topic.") from exc


def subscription_get(*, tenant: Tenant, name: str) -> Subscription:
    try:
        return subscription_list(tenant=tenant).get(name=name)
    except Subscription.DoesNotExist as exc:
        raise NotFound("No such subscription.") from exc


def resource_get(*, tenant: Tenant, kind: str, name: str) -> Queue | Topic | Subscription:
    """The tenant's queue, topic or subscription ``name`` (with what its views show joined
    in); NotFound when it has none, in particular for another tenant's."""
    if kind == "queue":
        return queue_get(tenant=tenant, name=name)
    if kind == "topic":
        return topic_get(tenant=tenant, name=name)
    return subscription_get(tenant=tenant, name=name)


def require_access(principal: Principal, row: Queue | Topic | Subscription) -> None:
    """403 unless the key covers ``row``; a subscription is also covered by its topic's
    pattern (the same rule as :func:`queues.messaging.require_access` on documents)."""
    if isinstance(row, Subscription):
        principal.require_access("subscription", row.name, topic=row.topic.name)
    else:
        principal.require_access("queue" if isinstance(row, Queue) else "topic", row.name)


# --- what Redis holds -------------------------------------------------------------------------


def live_stats(resources: Sequence[Queue | Subscription]) -> list[dict[str, int]]:
    """available / in_flight / delayed / oldest_age_seconds of each queue or subscription,
    as a pull would see them now (the due work is done first: see streams.current_stats).
    Raises RedisError when Redis does not answer."""
    consumers = [
        queue_consumer(str(row.tenant_id), queue_document(row))
        if isinstance(row, Queue)
        else subscription_consumer(str(row.tenant_id), subscription_document(row))
        for row in resources
    ]
    return streams.current_stats(get_redis(), consumers, now_ms()) if consumers else []


def queue_peek(queue: Queue, *, limit: int, after: str | None = None) -> dict[str, Any]:
    """Up to ``limit`` of the queue's stored messages after offset ``after``, in order and
    with their state, leasing nothing: ``{"messages": [...], "next": offset | None}``."""
    consumer = queue_consumer(str(queue.tenant_id), queue_document(queue))
    messages = streams.peek(get_redis(), consumer, limit=limit, after=after)
    return _page(messages, limit)


def topic_log(
    topic: Topic, *, partition: int, limit: int, after: str | None = None
) -> dict[str, Any]:
    """Up to ``limit`` retained messages of one partition after offset ``after``, in publish
    order: ``{"messages": [...], "next": offset | None}`` (None: this page reached the end).
    A partition the topic does not have is a 400."""
    if partition >= topic.partitions:
        raise InvalidRequest(
            f"partition: the topic has partitions 0 to {topic.partitions - 1}.",
            errors=[{"field": "partition", "detail": "Out of range."}],
        )
    messages = streams.log_read(
        get_redis(),
        str(topic.tenant_id),
        str(topic.id),
        partition=partition,
        after=after,
        limit=limit,
    )
    return _page(messages, limit)


def _page(messages: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(messages) == limit
    return {"messages": messages, "next": messages[-1]["offset"] if more else None}
