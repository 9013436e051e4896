"""What the engine needs to know about a queue, topic or subscription: its Redis keys and
settings, built from the hot-cache documents (see queues.selectors) without PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from kernel import redis_keys
from kernel.redis_keys import usage_key

QUEUE_GROUP = "q"
DEDUP_WINDOW_SECONDS = 300


def subscription_group(subscription_id: str) -> str:
    return "s." + subscription_id.replace("-", "")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a publish writes: one stream and one delay set per partition."""

    streams: tuple[str, ...]
    delays: tuple[str, ...]
    dedup_prefix: str
    channel: str
    usage: str
    default_delay: int
    fanout: bool  # a topic: every waiting subscription wants each message
    label: str = ""  # "queue:<name>" / "topic:<name>": the resource in metering
    backlog: str = ""  # the backlog hash (messages and bytes stored)
    max_backlog_messages: int | None = None  # the resource's own limits (None: the tenant's)
    max_backlog_bytes: int | None = None

    @property
    def partitions(self) -> int:
        return len(self.streams)


@dataclass(frozen=True, slots=True)
class Consumer:
    """A queue or a subscription as a reader: per partition a stream, the delay set feeding
    it, and this consumer's lease and retry sets; plus its delivery settings."""

    label: str  # "queue:<name>" / "subscription:<name>": the dead-letter source
    group: str
    streams: tuple[str, ...]
    delays: tuple[str, ...]
    leases: tuple[str, ...]
    retries: tuple[str, ...]
    is_queue: bool
    visibility_ms: int
    max_attempts: int
    backoff_min_ms: int
    backoff_max_ms: int
    filter_json: str
    dlq_stream: str | None
    dlq_channel: str
    channel: str
    usage: str
    backlog: str = ""  # the queue's backlog hash (a subscription: its topic's)
    dlq_backlog: str = ""  # the dead-letter queue's backlog hash ("" without one)
    fair: bool = False  # a fair queue: pulls serve quiet groups first (see pull.lua)

    @property
    def partitions(self) -> int:
        return len(self.streams)


def queue_keys(tenant_id: str, queue_id: str) -> dict[str, str]:
    return {
        "stream": redis_keys.queue_stream(tenant_id, queue_id),
        "delay": redis_keys.queue_delay(tenant_id, queue_id),
        "lease": redis_keys.queue_lease(tenant_id, queue_id),
        "retry": redis_keys.queue_retry(tenant_id, queue_id),
        "dedup": redis_keys.queue_dedup_prefix(tenant_id, queue_id),
        "channel": redis_keys.queue_channel(tenant_id, queue_id),
    }


def topic_partition_keys(tenant_id: str, topic_id: str, partition: int) -> dict[str, str]:
    return {
        "stream": redis_keys.topic_partition_stream(tenant_id, topic_id, partition),
        "delay": redis_keys.topic_partition_delay(tenant_id, topic_id, partition),
    }


def topic_channel(tenant_id: str, topic_id: str) -> str:
    return redis_keys.topic_channel(tenant_id, topic_id)


def topic_dedup_prefix(tenant_id: str, topic_id: str) -> str:
    return redis_keys.topic_dedup_prefix(tenant_id, topic_id)


def subscription_partition_keys(
    tenant_id: str, subscription_id: str, partition: int
) -> dict[str, str]:
    return {
        "lease": redis_keys.subscription_partition_lease(tenant_id, subscription_id, partition),
        "retry": redis_keys.subscription_partition_retry(tenant_id, subscription_id, partition),
    }


def queue_destination(tenant_id: str, queue: dict[str, Any]) -> Destination:
    keys = queue_keys(tenant_id, queue["id"])
    return Destination(
        streams=(keys["stream"],),
        delays=(keys["delay"],),
        dedup_prefix=keys["dedup"],
        channel=keys["channel"],
        usage=usage_key(tenant_id),
        default_delay=queue["delay_seconds"],
        fanout=False,
        label=f"queue:{queue['name']}",
        backlog=redis_keys.queue_backlog(tenant_id, queue["id"]),
        max_backlog_messages=queue.get("max_backlog_messages"),
        max_backlog_bytes=queue.get("max_backlog_bytes"),
    )


def topic_destination(tenant_id: str, topic: dict[str, Any]) -> Destination:
    parts = [topic_partition_keys(tenant_id, topic["id"], p) for p in range(topic["partitions"])]
    return Destination(
        streams=tuple(p["stream"] for p in parts),
        delays=tuple(p["delay"] for p in parts),
        dedup_prefix=topic_dedup_prefix(tenant_id, topic["id"]),
        channel=topic_channel(tenant_id, topic["id"]),
        usage=usage_key(tenant_id),
        default_delay=0,
        fanout=True,
        label=f"topic:{topic['name']}",
        backlog=redis_keys.topic_backlog(tenant_id, topic["id"]),
        max_backlog_messages=topic.get("max_backlog_messages"),
        max_backlog_bytes=topic.get("max_backlog_bytes"),
    )


def _dlq(tenant_id: str, doc: dict[str, Any]) -> tuple[str | None, str, str]:
    dlq = doc.get("dlq")
    if not dlq or not doc.get("max_delivery_attempts"):
        return None, "", ""
    keys = queue_keys(tenant_id, dlq["id"])
    return keys["stream"], keys["channel"], redis_keys.queue_backlog(tenant_id, dlq["id"])


def queue_consumer(tenant_id: str, queue: dict[str, Any]) -> Consumer:
    keys = queue_keys(tenant_id, queue["id"])
    dlq_stream, dlq_channel, dlq_backlog = _dlq(tenant_id, queue)
    return Consumer(
        label=f"queue:{queue['name']}",
        group=QUEUE_GROUP,
        streams=(keys["stream"],),
        delays=(keys["delay"],),
        leases=(keys["lease"],),
        retries=(keys["retry"],),
        is_queue=True,
        visibility_ms=queue["visibility_timeout"] * 1000,
        max_attempts=queue.get("max_delivery_attempts") or 0,
        backoff_min_ms=queue["backoff"][0] * 1000,
        backoff_max_ms=queue["backoff"][1] * 1000,
        filter_json="",
        dlq_stream=dlq_stream,
        dlq_channel=dlq_channel,
        channel=keys["channel"],
        usage=usage_key(tenant_id),
        backlog=redis_keys.queue_backlog(tenant_id, queue["id"]),
        dlq_backlog=dlq_backlog,
        fair=bool(queue.get("fair")),
    )


def fair_keys(lease: str) -> tuple[str, str]:
    """A fair queue's in-flight counts, kept beside its lease set (see fair_take in
    _lib.lua): leased entry id -> group, and group -> leased count."""
    return lease + ":fair", lease + ":fairn"


def subscription_consumer(tenant_id: str, sub: dict[str, Any]) -> Consumer:
    topic = sub["topic"]
    parts = range(topic["partitions"])
    topic_parts = [topic_partition_keys(tenant_id, topic["id"], p) for p in parts]
    own = [subscription_partition_keys(tenant_id, sub["id"], p) for p in parts]
    dlq_stream, dlq_channel, dlq_backlog = _dlq(tenant_id, sub)
    return Consumer(
        label=f"subscription:{sub['name']}",
        group=subscription_group(sub["id"]),
        streams=tuple(p["stream"] for p in topic_parts),
        delays=tuple(p["delay"] for p in topic_parts),
        leases=tuple(p["lease"] for p in own),
        retries=tuple(p["retry"] for p in own),
        is_queue=False,
        visibility_ms=sub["visibility_timeout"] * 1000,
        max_attempts=sub.get("max_delivery_attempts") or 0,
        backoff_min_ms=sub["backoff"][0] * 1000,
        backoff_max_ms=sub["backoff"][1] * 1000,
        filter_json=orjson.dumps(sub["filter"]).decode() if sub.get("filter") else "",
        dlq_stream=dlq_stream,
        dlq_channel=dlq_channel,
        channel=topic_channel(tenant_id, topic["id"]),
        usage=usage_key(tenant_id),
        backlog=redis_keys.topic_backlog(tenant_id, topic["id"]),
        dlq_backlog=dlq_backlog,
    )
