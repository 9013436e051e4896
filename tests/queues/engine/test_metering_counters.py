"""The hourly usage counters the data plane's scripts keep (kernel.redis_keys.usage_hour_field),
for the tenant's total, per API key and per resource, exactly: published and its bytes,
delivered and its bytes, acked, dead-lettered, requests. A refused call counts nothing; a
background dead letter counts for the tenant and the resource only."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kernel.errors import RateLimited
from kernel.redis_client import get_redis
from kernel.redis_keys import parse_usage_field
from queues.engine import dataplane
from queues.engine.messages import validate_batch
from tests.engine import queue_reader, queue_writer, run, subscription_reader, topic_writer
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic

T0 = 1_800_000_000_000
KEY = "aaaaaaaaaa"
ME = dataplane.Limits(key=KEY, request=True)


def counters(ctx: TenantCtx) -> Counter[tuple[str, str, str]]:
    """(column, key prefix, resource) -> count, over every hour of the usage hash."""
    usage = get_redis().hgetall(queue_writer_usage(ctx))
    out: Counter[tuple[str, str, str]] = Counter()
    for name, value in usage.items():
        field = parse_usage_field(name.decode())
        if field is not None:
            out[(field.column, field.key_prefix, field.resource)] += int(value)
    return out


def queue_writer_usage(ctx: TenantCtx) -> str:
    from kernel.redis_keys import usage_key

    return usage_key(str(ctx.tenant.id))


def scoped(found: Counter[tuple[str, str, str]], column: str, resource: str) -> list[int]:
    """The count of ``column`` for the tenant, the key and ``resource``."""
    return [found[(column, "", "")], found[(column, KEY, "")], found[(column, "", resource)]]


def publish(dest: Any, *bodies: Any, now: int = T0, limits: Any = ME) -> list[dict[str, Any]]:
    messages = validate_batch(
        {"messages": [{"body": b} for b in bodies]}, max_message_bytes=1024, now_ms=now
    )
    return run(dataplane.apublish(dest, messages, now, limits))


def test_publish_pull_ack_count_for_tenant_key_and_queue(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
    publish(dest, *(f"m{i}" for i in range(5)))  # '"m0"': 4 bytes each
    found = counters(acme)
    assert scoped(found, "published", "queue:orders") == [5, 5, 5]
    assert scoped(found, "published_bytes", "queue:orders") == [20, 20, 20]
    assert scoped(found, "requests", "queue:orders") == [1, 1, 1]
    got = run(dataplane.apull(consumer, count=10, now_ms=T0, limits=ME)).messages
    assert len(got) == 5
    found = counters(acme)
    assert scoped(found, "delivered", "queue:orders") == [5, 5, 5]
    assert scoped(found, "delivered_bytes", "queue:orders") == [20, 20, 20]
    ids = [m["ack_id"] for m in got]
    run(dataplane.asettle(consumer, "ack", ids, ms=0, now_ms=T0, limits=ME))
    found = counters(acme)
    assert scoped(found, "acked", "queue:orders") == [5, 5, 5]
    assert scoped(found, "requests", "queue:orders") == [3, 3, 3]
    assert found[("dead_lettered", "", "")] == 0
    # the month's count, the tenant's and the key's
    month = get_redis().hgetall(queue_writer_usage(acme))
    assert {k: int(v) for k, v in month.items() if k.startswith(b"m")} == {
        b"m202701:p": 5,
        b"m202701:p:k:" + KEY.encode(): 5,
    }


def test_refused_batch_counts_nothing(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    dest = queue_writer(acme, "orders")
    limited = dataplane.Limits(key=KEY, request=True, key_per_second=2)
    publish(dest, 1, 2, limits=limited)
    before = get_redis().hgetall(queue_writer_usage(acme))
    with pytest.raises(RateLimited):
        publish(dest, 3, limits=limited)
    assert get_redis().hgetall(queue_writer_usage(acme)) == before
    assert get_redis().xlen(dest.streams[0]) == 2


def test_topic_and_subscription_are_their_own_resources(acme: TenantCtx) -> None:
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish(topic_writer(acme, "events"), 1, 2, 3)
    consumer = subscription_reader(acme, "audit")
    got = run(dataplane.apull(consumer, count=10, now_ms=T0, limits=ME)).messages
    found = counters(acme)
    assert scoped(found, "published", "topic:events") == [3, 3, 3]
    assert scoped(found, "delivered", "subscription:audit") == [len(got), len(got), len(got)]
    assert len(got) == 3


def test_dead_letters_by_a_request_and_by_housekeeping(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="orders-dlq")
    make_queue(
        tenant=acme.tenant,
        name="orders",
        dead_letter_queue="orders-dlq",
        max_delivery_attempts=1,
        retry_backoff={"min_seconds": 0, "max_seconds": 0},
    )
    dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
    publish(dest, 1, 2, 3)
    got = run(dataplane.apull(consumer, count=3, now_ms=T0, limits=ME)).messages
    # a nack at the last attempt dead-letters: counted for the key too
    run(dataplane.asettle(consumer, "nack", [got[0]["ack_id"]], ms=0, now_ms=T0, limits=ME))
    assert scoped(counters(acme), "dead_lettered", "queue:orders") == [1, 1, 1]
    # the other two leases expire; beat's housekeeping pull has no key
    run(dataplane.apull(consumer, count=0, now_ms=T0 + 3_600_000))
    found = counters(acme)
    assert scoped(found, "dead_lettered", "queue:orders") == [3, 1, 3]
    assert found[("requests", "", "")] == 3  # publish, pull, nack: housekeeping is none
