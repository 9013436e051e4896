"""Reads of topics, queues and subscriptions, always within one tenant: their rows, the
documents the hot cache serves to the data plane, and what Redis holds of them (live stats,
a queue's messages, a topic's log). The API and the console both read through here."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from django.db.models import Count, QuerySet

from kernel.errors import InvalidRequest, NotFound
from kernel.hotcache import HotCache, register
from kernel.limits import is_stream_id
from kernel.redis_client import get_redis
from queues.engine import browse, streams
from queues.engine.messages import now_ms
from queues.engine.targets import queue_consumer, subscription_consumer
from queues.models import Queue, ResourceMetric, Subscription, Topic
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
        "fair": queue.fair,  # pulls serve quiet groups (message keys) before noisy ones
        # the queue's own backlog limits (None: the tenant's); the data plane takes the
        # tighter of these and the tenant document's, so a plan change needs no push here
        "max_backlog_messages": queue.max_backlog_messages,
        "max_backlog_bytes": queue.max_backlog_bytes,
    }


def topic_document(topic: Topic) -> dict[str, Any]:
    return {
        "kind": "topic",
        "id": str(topic.id),
        "name": topic.name,
        "partitions": topic.partitions,
        "retention_seconds": topic.retention_seconds,
        "max_backlog_messages": topic.max_backlog_messages,  # as queue_document's
        "max_backlog_bytes": topic.max_backlog_bytes,
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


# --- the console's workbench: reading messages without touching them --------------------------

DEAD_LETTER_ATTRIBUTES = (
    "op-dead-letter-source",
    "op-dead-letter-reason",
    "op-delivery-attempts",
    "op-original-id",
)


def readable(message: dict[str, Any]) -> dict[str, Any]:
    """A delivered message with its spliced JSON parsed back: ``body`` (the JSON value, absent
    for a binary body, which keeps ``body_base64``) and ``attributes`` as a dict."""
    plain = dict(message)
    if "body" in message:
        # json, not orjson: a body may hold integers beyond 64 bits, which orjson refuses.
        plain["body"] = json.loads(orjson.dumps(message["body"]))
    plain["attributes"] = orjson.loads(orjson.dumps(message["attributes"]))
    return plain


def quiet_stats(row: Queue | Subscription) -> dict[str, int]:
    """:func:`live_stats` of one queue or subscription without first doing the due work, so
    reading them changes nothing (a due delay still counts as available). RedisError when
    Redis does not answer."""
    consumer = (
        queue_consumer(str(row.tenant_id), queue_document(row))
        if isinstance(row, Queue)
        else subscription_consumer(str(row.tenant_id), subscription_document(row))
    )
    return streams.consumer_stats(get_redis(), consumer, now_ms())


def queue_browse(queue: Queue, *, limit: int, after: str | None = None) -> dict[str, Any]:
    """:func:`queue_peek` with each message readable (see :func:`readable`) and, for one in
    flight, ``lease_deadline_ms``, for one waiting out its retry backoff, ``retry_due_ms``
    (else None). Leases, moves and counts nothing."""
    consumer = queue_consumer(str(queue.tenant_id), queue_document(queue))
    client = get_redis()
    messages = streams.peek(client, consumer, limit=limit, after=after)
    times = streams.lease_and_retry_times(client, consumer, [m["offset"] for m in messages])
    out = []
    for message, (lease, retry) in zip(messages, times, strict=True):
        plain = readable(message)
        plain["lease_deadline_ms"] = lease
        plain["retry_due_ms"] = retry
        out.append(plain)
    return _page(out, limit)


def queue_delayed(queue: Queue, *, limit: int, start: int = 0) -> dict[str, Any]:
    """The queue's delayed messages (not stored in the stream yet), soonest due first, from
    position ``start``: ``{"messages": [...with due_ms], "next": position | None}``."""
    consumer = queue_consumer(str(queue.tenant_id), queue_document(queue))
    messages = streams.delayed_read(get_redis(), consumer, start=max(start, 0), limit=limit)
    return {
        "messages": [readable(m) for m in messages],
        "next": start + limit if len(messages) == limit else None,
    }


def dead_letter_page(queue: Queue, *, limit: int, after: str | None = None) -> dict[str, Any]:
    """The dead letters stored in ``queue``, oldest first, each a :func:`queue_browse` message
    with ``source``, ``reason``, ``attempts`` and ``original_id`` from the op-* attributes
    the engine adds (None when a message has none: it was published to the queue directly)."""
    page = queue_browse(queue, limit=limit, after=after)
    for message in page["messages"]:
        attrs = message["attributes"]
        message["source"] = attrs.get("op-dead-letter-source")
        message["reason"] = attrs.get("op-dead-letter-reason")
        attempts = attrs.get("op-delivery-attempts")
        message["attempts"] = int(attempts) if attempts and attempts.isdigit() else None
        message["original_id"] = attrs.get("op-original-id")
        message["own_attributes"] = {
            k: v for k, v in attrs.items() if k not in DEAD_LETTER_ATTRIBUTES
        }
    return page


def dead_letter_feeders(queue: Queue) -> dict[str, list[str]]:
    """The names of the tenant's queues and subscriptions whose dead letters go to ``queue``."""
    tenant_id = queue.tenant_id
    return {
        "queues": list(
            Queue.objects.for_tenant(tenant_id)
            .filter(dead_letter_queue=queue)
            .order_by("name")
            .values_list("name", flat=True)
        ),
        "subscriptions": list(
            Subscription.objects.for_tenant(tenant_id)
            .filter(dead_letter_queue=queue)
            .order_by("name")
            .values_list("name", flat=True)
        ),
    }


def topic_log_page(
    topic: Topic, *, partition: int, limit: int, after: str | None = None
) -> dict[str, Any]:
    """:func:`topic_log` with each message :func:`readable`."""
    page = topic_log(topic, partition=partition, limit=limit, after=after)
    return {"messages": [readable(m) for m in page["messages"]], "next": page["next"]}


def resource_metric_list(
    *, tenant: Tenant, row: Queue | Topic | Subscription, since: datetime
) -> QuerySet[ResourceMetric]:
    """One resource's per-minute metrics from ``since`` on, oldest first."""
    kind = (
        "queue" if isinstance(row, Queue) else "topic" if isinstance(row, Topic) else "subscription"
    )
    return (
        ResourceMetric.objects.for_tenant(tenant)
        .filter(kind=kind, resource_id=row.id, minute__gte=since)
        .order_by("minute")
    )


# --- lists the console pages through ----------------------------------------------------------


def _natural(rows: QuerySet[Any], search: str) -> QuerySet[Any]:
    """``rows`` whose name contains ``search`` (any case), in natural order of their names:
    sorted by PostgreSQL, so a page of a long list loads only that page's rows."""
    if search:
        rows = rows.filter(name__icontains=search)
    return rows.order_by("sort_key", "name")  # queues.models.natural_sort_key


def queue_search(*, tenant: Tenant | str, search: str = "") -> QuerySet[Queue]:
    """The tenant's queues whose name contains ``search``, "q2" before "q10"."""
    return _natural(queue_list(tenant=tenant), search)


def topic_search(*, tenant: Tenant | str, search: str = "") -> QuerySet[Topic]:
    """Like :func:`queue_search`, each topic annotated with ``subscription_count``."""
    topics = topic_list(tenant=tenant).annotate(subscription_count=Count("subscriptions"))
    return _natural(topics, search)


def subscription_search(*, tenant: Tenant | str, search: str = "") -> QuerySet[Subscription]:
    """Like :func:`queue_search`, with each subscription's topic and dead-letter queue."""
    return _natural(subscription_list(tenant=tenant), search)


def topic_subscriptions(*, tenant: Tenant | str, topic: Topic) -> QuerySet[Subscription]:
    """The subscriptions of ``topic``, in natural order of their names."""
    return _natural(subscription_list(tenant=tenant).filter(topic=topic), "")


# --- the console's workbench: a subscription's messages, read without touching them -----------

_RANK = re.compile(r"[0-9]{1,18}")


def _subscription_cursor(
    value: str | None, *, field: str, partitions: int, ranks: bool = False
) -> list[str] | None:
    """A cursor of :func:`subscription_peek` as a page handed it out: one point per partition,
    comma-separated (offsets, or with ``ranks`` positions in the delay sets). Anything else, a
    cursor of a topic with another number of partitions included, is a 400 naming ``field``."""
    if value is None:
        return None
    points = value.split(",")
    valid = _RANK.fullmatch if ranks else is_stream_id
    if len(points) != partitions or not all(valid(point) for point in points):
        raise InvalidRequest(
            f"{field}: not a position in this subscription's {partitions} partition"
            f"{'s' if partitions != 1 else ''}.",
            errors=[{"field": field, "detail": "Not a cursor this page handed out."}],
        )
    return points


def _browse_page(page: browse.Page) -> dict[str, Any]:
    return {
        "messages": [readable(m) for m in page.messages],
        "next": ",".join(page.next) if page.next is not None else None,
        "skipped": page.skipped,
    }


def subscription_peek(
    sub: Subscription,
    *,
    limit: int,
    after: str | None = None,
    pending: str | None = None,
    delayed: str | None = None,
) -> dict[str, Any]:
    """What a subscription holds now, read without leasing, moving, settling or counting
    anything and without doing the due work (see :mod:`queues.engine.browse`):

    - ``partitions``: its group on each partition: ``partition``, ``position`` (the last
      offset it read; None when Redis lost the group), ``pending``, ``lag``;
    - ``pending``: up to ``limit`` messages delivered and not yet settled, in offset order
      across partitions: ``in_flight`` with ``lease_deadline_ms``, or ``retry`` with
      ``retry_due_ms``, each with ``delivery_attempts``;
    - ``unread``: up to ``limit`` messages its pulls deliver for the first time, from its
      position on, oldest first (its filter applied: ``skipped`` counts what it left out);
    - ``delayed``: up to ``limit`` of the topic's delayed messages its filter lets through,
      soonest due first, with ``due_ms``.

    Each is ``{"messages": [...], "next": cursor | None, "skipped": n}``, every message
    :func:`readable`; a ``next`` cursor, given back as ``after``, ``pending`` or
    ``delayed``, reads the following page of that list (an ``after`` behind the position
    reads from the position). A cursor this function did not hand out for this topic is a
    400 naming its parameter. RedisError when Redis does not answer."""
    partitions = sub.topic.partitions
    unread_from = _subscription_cursor(after, field="after", partitions=partitions)
    pending_from = _subscription_cursor(pending, field="pending", partitions=partitions)
    delayed_from = _subscription_cursor(delayed, field="delayed", partitions=partitions, ranks=True)
    consumer = subscription_consumer(str(sub.tenant_id), subscription_document(sub))
    client = get_redis()
    groups = browse.group_positions(client, consumer)
    return {
        "partitions": [asdict(group) for group in groups],
        "pending": _browse_page(browse.pending(client, consumer, after=pending_from, limit=limit)),
        "unread": _browse_page(
            browse.unread(
                client,
                consumer,
                positions=[group.position for group in groups],
                after=unread_from,
                limit=limit,
            )
        ),
        "delayed": _browse_page(browse.delayed(client, consumer, after=delayed_from, limit=limit)),
    }
