"""Reads of topics, queues and subscriptions, always within one tenant, and the documents
the hot cache serves to the data plane."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from kernel.errors import NotFound
from kernel.hotcache import HotCache, register
from queues.models import Queue, Subscription, Topic
from tenants.models import Tenant

KINDS = ("queue", "topic", "subscription")


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


def queue_list(*, tenant: Tenant) -> QuerySet[Queue]:
    return Queue.objects.for_tenant(tenant).select_related("dead_letter_queue")


def topic_list(*, tenant: Tenant) -> QuerySet[Topic]:
    return Topic.objects.for_tenant(tenant)


def subscription_list(*, tenant: Tenant) -> QuerySet[Subscription]:
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
