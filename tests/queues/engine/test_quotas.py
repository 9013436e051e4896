"""Quotas enforced inside the data plane's scripts: the rates of the tenant and of a key
(publish, consume, requests), the monthly messages of both, and a queue's or topic's backlog
(messages and bytes, kept exact by every path that adds or removes a message). A refused call
stores, leases and counts nothing."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.errors import QuotaExceeded, RateLimited
from kernel.redis_client import get_redis
from queues.engine import dataplane, streams
from queues.engine.messages import validate_batch
from queues.models import Queue
from tests.engine import queue_reader, queue_writer, run, topic_writer
from tests.factories import TenantCtx, make_queue, make_topic

T0 = 1_800_000_000_000  # a fixed clock (ms), 0 ms into its second
ACTOR = "user:test@example.test"


def batch(*bodies: Any, now: int = T0) -> list[Any]:
    return validate_batch(
        {"messages": [{"body": b} for b in bodies]}, max_message_bytes=1024, now_ms=now
    )


def publish(dest: Any, *bodies: Any, now: int = T0, **limits: Any) -> list[dict[str, Any]]:
    return run(dataplane.apublish(dest, batch(*bodies, now=now), now, dataplane.Limits(**limits)))


def pull(consumer: Any, count: int, now: int = T0, **limits: Any) -> list[dict[str, Any]]:
    return run(
        dataplane.apull(consumer, count=count, now_ms=now, limits=dataplane.Limits(**limits))
    ).messages


def state_of_refusal(dest: Any, *bodies: Any, **limits: Any) -> Any:
    """The RateLimit state a refused publish leaves (in its own task's context)."""

    async def call() -> Any:
        with pytest.raises((RateLimited, QuotaExceeded)):
            await dataplane.apublish(dest, batch(*bodies), T0, dataplane.Limits(**limits))
        return dataplane.RATE_LIMIT.get()

    return run(call())


def everything(ctx: TenantCtx) -> dict[bytes, Any]:
    """Every key of the tenant with its value: "nothing changed" comparisons."""
    r = get_redis()
    out: dict[bytes, Any] = {}
    for key in sorted(r.keys(f"op:{{t.{str(ctx.tenant.id).replace('-', '')}}}:*")):
        kind = r.type(key)
        if kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"stream":
            out[key] = r.xrange(key)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = r.get(key)
    return out


def backlog(dest: Any) -> tuple[int, int]:
    held = get_redis().hmget(dest.backlog, "n", "b")
    return int(held[0] or 0), int(held[1] or 0)


class TestPublishRates:
    def test_key_rate_refuses_whole_batch_and_counts_nothing(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest = queue_writer(acme, "orders")
        publish(dest, 1, 2, key="aaaaaaaaaa", key_per_second=3, request=True)
        before = everything(acme)
        with pytest.raises(RateLimited) as refused:
            publish(dest, 3, 4, now=T0 + 400, key="aaaaaaaaaa", key_per_second=3, request=True)
        assert refused.value.detail == (
            "The key's publish rate of 3 messages/s is used up for this second; nothing was stored."
        )
        assert refused.value.retry_after == 1
        assert everything(acme) == before
        assert state_of_refusal(dest, 5, 6, key="aaaaaaaaaa", key_per_second=3) == (
            dataplane.RateLimitState("key-publish", 3, 1, 0, 1)
        )
        # another key has its own budget; the same key's next second is a new one
        publish(dest, 5, 6, now=T0 + 500, key="bbbbbbbbbb", key_per_second=3, request=True)
        publish(dest, 7, 8, now=T0 + 1000, key="aaaaaaaaaa", key_per_second=3, request=True)
        assert get_redis().xlen(dest.streams[0]) == 6

    def test_tenant_rate_counts_every_key(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest = queue_writer(acme, "orders")
        publish(dest, 1, 2, key="aaaaaaaaaa", per_second=3)
        with pytest.raises(RateLimited) as refused:
            publish(dest, 3, 4, key="bbbbbbbbbb", per_second=3)
        assert refused.value.detail.startswith("The tenant's publish rate of 3 messages/s")
        assert get_redis().xlen(dest.streams[0]) == 2

    def test_duplicates_do_not_use_the_rate(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest = queue_writer(acme, "orders")
        once = validate_batch({"body": 1, "dedup_id": "x"}, max_message_bytes=1024, now_ms=T0)
        limits = dataplane.Limits(per_second=1)
        run(dataplane.apublish(dest, once, T0, limits))
        # a repeat within the second would be refused as a whole batch: checked before dedup
        with pytest.raises(RateLimited):
            run(dataplane.apublish(dest, once, T0 + 1, limits))
        assert get_redis().xlen(dest.streams[0]) == 1


class TestMonthly:
    def test_key_monthly_quota(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest = queue_writer(acme, "orders")
        publish(dest, 1, 2, 3, key="aaaaaaaaaa", key_per_month=4)
        before = everything(acme)
        with pytest.raises(QuotaExceeded) as refused:
            publish(dest, 4, 5, now=T0 + 5000, key="aaaaaaaaaa", key_per_month=4)
        assert refused.value.detail == (
            "The key's monthly quota of 4 messages is used up; nothing was stored."
        )
        assert everything(acme) == before
        publish(dest, 4, 5, now=T0 + 5000, key="bbbbbbbbbb", key_per_month=4)
        publish(dest, 6, now=T0 + 6000, key="aaaaaaaaaa", key_per_month=4)
        assert get_redis().xlen(dest.streams[0]) == 6

    def test_tenant_monthly_quota_counts_every_key(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest = queue_writer(acme, "orders")
        publish(dest, 1, 2, key="aaaaaaaaaa", per_month=3)
        with pytest.raises(QuotaExceeded) as refused:
            publish(dest, 3, 4, now=T0 + 5000, key="bbbbbbbbbb", per_month=3)
        assert refused.value.detail.startswith("The tenant's monthly quota of 3 messages")


class TestBacklog:
    def test_max_messages_counts_stored_and_delayed(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        publish(dest, 1, max_backlog_messages=3)
        delayed = validate_batch(
            {"body": 2, "delay_seconds": 60}, max_message_bytes=1024, now_ms=T0
        )
        run(dataplane.apublish(dest, delayed, T0, dataplane.Limits(max_backlog_messages=3)))
        before = everything(acme)
        with pytest.raises(QuotaExceeded) as refused:
            publish(dest, 3, 4, max_backlog_messages=3)
        assert refused.value.detail == (
            "Queue 'orders' holds its backlog limit of 3 messages; nothing was stored."
        )
        assert everything(acme) == before
        (message,) = pull(consumer, 10)
        run(dataplane.asettle(consumer, "ack", [message["ack_id"]], ms=0, now_ms=T0))
        assert backlog(dest) == (1, 1)  # the delayed message: body "2"
        publish(dest, 3, 4, max_backlog_messages=3)
        assert backlog(dest) == (3, 3)

    def test_own_limit_narrows_the_tenants_and_bytes_return_to_zero(self, acme: TenantCtx) -> None:
        queue = make_queue(tenant=acme.tenant, name="orders")
        Queue.objects.for_tenant(acme.tenant).filter(pk=queue.pk).update(max_backlog_bytes=10)
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        assert dest.max_backlog_bytes == 10
        publish(dest, "abc", "def", max_backlog_bytes=1000)  # '"abc"': 5 bytes each
        assert backlog(dest) == (2, 10)
        with pytest.raises(QuotaExceeded) as refused:
            publish(dest, "g", max_backlog_bytes=1000)
        assert refused.value.detail == (
            "Queue 'orders' holds its backlog limit of 10 bytes; nothing was stored."
        )
        got = pull(consumer, 10)
        run(dataplane.asettle(consumer, "ack", [m["ack_id"] for m in got], ms=0, now_ms=T0))
        assert backlog(dest) == (0, 0)
        publish(dest, "g", max_backlog_bytes=1000)
        assert backlog(dest) == (1, 3)

    def test_topic_backlog_spans_partitions_and_retention_trims_it(self, acme: TenantCtx) -> None:
        make_topic(tenant=acme.tenant, name="events", partitions=3)
        dest = topic_writer(acme, "events")
        publish(dest, 1, 2, 3, 4, max_backlog_messages=5)
        with pytest.raises(QuotaExceeded):
            publish(dest, 5, 6, max_backlog_messages=5)
        assert backlog(dest) == (4, 4)
        removed = streams.trim(get_redis(), dest.streams, retention_seconds=1, now_ms=T0 + 5000)
        assert removed == 4
        assert backlog(dest) == (0, 0)

    def test_every_removal_keeps_the_counters_exact(self, acme: TenantCtx) -> None:
        """Dead letters move between the counters; delete by id, redrive and purge keep
        them exact; nothing goes below zero."""
        make_queue(tenant=acme.tenant, name="orders-dlq")
        make_queue(
            tenant=acme.tenant,
            name="orders",
            dead_letter_queue="orders-dlq",
            max_delivery_attempts=1,
            retry_backoff={"min_seconds": 0, "max_seconds": 0},
        )
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        dlq_dest = queue_writer(acme, "orders-dlq")
        publish(dest, "aa", "bb", "cc")
        assert backlog(dest) == (3, 12)
        got = pull(consumer, 2)
        # the two leases expire: the housekeeping pull moves them to the dead-letter queue
        pull(consumer, 0, now=T0 + 10 * 60 * 1000)
        assert backlog(dest) == (1, 4)
        stored = get_redis().xrange(dlq_dest.streams[0])
        # the op-* attributes are part of a dead letter's bytes
        assert backlog(dlq_dest) == (2, sum(len(f[b"b"]) + len(f[b"a"]) for _, f in stored))
        assert len(got) == 2
        dlq = queue_reader(acme, "orders-dlq")
        ids = [e[0].decode() for e in get_redis().xrange(dlq.streams[0])]
        streams.delete_ids(get_redis(), dlq, ids[:1])
        assert backlog(dlq_dest)[0] == 1
        streams.redrive(
            get_redis(),
            dlq,
            targets={},
            default=(dest.streams[0], dest.channel),
            max_messages=None,
        )
        assert backlog(dlq_dest) == (0, 0)
        assert backlog(dest) == (2, 8)  # the op-* attributes leave with the redrive
        streams.purge(get_redis(), consumer)
        assert backlog(dest) == (0, 0)


class TestConsume:
    def test_consume_rate_caps_the_lease_then_refuses(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        publish(dest, 1, 2, 3, 4, 5)
        assert len(pull(consumer, 10, consume_per_second=2, request=True)) == 2
        before = everything(acme)
        with pytest.raises(RateLimited) as refused:
            pull(consumer, 10, now=T0 + 300, consume_per_second=2, request=True)
        assert refused.value.detail == (
            "The tenant's consume rate of 2 messages/s is used up for this second; "
            "nothing was leased."
        )
        assert everything(acme) == before
        assert len(pull(consumer, 10, now=T0 + 1000, consume_per_second=2)) == 2

    def test_key_consume_rate(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        publish(dest, 1, 2, 3)
        assert len(pull(consumer, 10, key="aaaaaaaaaa", key_consume_per_second=1)) == 1
        with pytest.raises(RateLimited) as refused:
            pull(consumer, 10, key="aaaaaaaaaa", key_consume_per_second=1)
        assert refused.value.detail.startswith("The key's consume rate of 1 messages/s")
        assert len(pull(consumer, 10, key="bbbbbbbbbb", key_consume_per_second=1)) == 1


class TestRequests:
    def test_request_rate_counts_publish_pull_and_settle(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        dest, consumer = queue_writer(acme, "orders"), queue_reader(acme, "orders")
        limits = dataplane.Limits(requests_per_second=3, request=True)
        run(dataplane.apublish(dest, batch(1, 2), T0, limits))
        got = run(dataplane.apull(consumer, count=10, now_ms=T0, limits=limits)).messages
        ids = [m["ack_id"] for m in got]
        assert run(dataplane.asettle(consumer, "deadline", ids, ms=5000, now_ms=T0, limits=limits))
        before = everything(acme)
        with pytest.raises(RateLimited) as refused:
            run(dataplane.asettle(consumer, "ack", ids, ms=0, now_ms=T0 + 900, limits=limits))
        assert refused.value.detail == (
            "The tenant's request rate of 3 requests/s is used up for this second; "
            "nothing was settled."
        )
        assert everything(acme) == before
        with pytest.raises(RateLimited):
            run(dataplane.apublish(dest, batch(3), T0 + 900, limits))
        assert run(
            dataplane.asettle(consumer, "ack", ids, ms=0, now_ms=T0 + 1000, limits=limits)
        ) == (2, [])

    def test_engine_calls_without_a_request_are_not_limited(self, acme: TenantCtx) -> None:
        make_queue(tenant=acme.tenant, name="orders")
        consumer = queue_reader(acme, "orders")
        for _ in range(3):  # housekeeping pulls: never requests
            pull(consumer, 0, requests_per_second=1)
