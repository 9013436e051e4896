"""The message engine's publish, pull and settle against a real Redis, with an explicit clock.

Every engine call takes ``now_ms``, so lease expiry, backoff and delays are tested by moving
the clock forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest

from kernel.errors import QuotaExceeded, RateLimited
from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine import dataplane, streams
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import subscription_consumer, topic_destination
from tests import engine
from tests.engine import queue_reader, queue_writer, redis_keys_of, run
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic

T0 = 1_800_000_000_000  # a fixed clock, in ms


def publish(dest: Any, *messages: dict[str, Any], now: int = T0) -> list[dict[str, Any]]:
    return engine.publish(dest, *messages, now=now)


def body(message: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(message["body"]))


def queue_ends(ctx: TenantCtx, name: str = "orders", **options: Any) -> tuple[Any, Any]:
    """A new queue's destination and consumer."""
    make_queue(tenant=ctx.tenant, name=name, **options)
    return queue_writer(ctx, name), queue_reader(ctx, name)


@pytest.fixture
def orders(acme: TenantCtx) -> tuple[Any, Any]:
    return queue_ends(acme, visibility_timeout=30)


def pull(consumer: Any, count: int = 10, now: int = T0, **kw: Any) -> list[dict[str, Any]]:
    return engine.pull(consumer, count, now=now, **kw)


def settle(
    consumer: Any, mode: str, ack_ids: list[str], now: int = T0, ms: int = 0
) -> tuple[int, list[str]]:
    return engine.settle(consumer, mode, ack_ids, ms=ms, now=now)


class TestLeases:
    def test_pull_leases_in_publish_order_and_hides_leased(self, orders: Any) -> None:
        """Pulled messages come in publish order and are invisible to the next pull."""
        dest, consumer = orders
        publish(dest, {"body": 1}, {"body": 2}, {"body": 3})
        first = pull(consumer, 2)
        assert [body(m) for m in first] == [1, 2]
        assert [m["delivery_attempt"] for m in first] == [1, 1]
        second = pull(consumer, 10)
        assert [body(m) for m in second] == [3]
        assert pull(consumer, 10) == []

    def test_expired_lease_redelivers_with_next_attempt_and_stales_old_ack_id(
        self, orders: Any
    ) -> None:
        """A lease that expires makes the message deliverable again with delivery_attempt 2,
        and the first ack id becomes stale: acking it changes nothing."""
        dest, consumer = orders
        publish(dest, {"body": "x"})
        (first,) = pull(consumer, now=T0)
        assert pull(consumer, now=T0 + 29_999) == []
        (again,) = pull(consumer, now=T0 + 30_000)
        assert again["id"] == first["id"]
        assert again["delivery_attempt"] == 2
        assert again["ack_id"] != first["ack_id"]
        assert settle(consumer, "ack", [first["ack_id"]], now=T0 + 30_001) == (0, [first["ack_id"]])
        # the stale ack did not remove the message: the current lease still settles it
        assert settle(consumer, "ack", [again["ack_id"]], now=T0 + 30_001) == (1, [])
        assert pull(consumer, now=T0 + 120_000) == []

    def test_ack_after_deadline_is_stale_even_before_redelivery(self, orders: Any) -> None:
        """Once the lease deadline passed, an ack is stale although nobody pulled again."""
        dest, consumer = orders
        publish(dest, {"body": "x"})
        (m,) = pull(consumer, now=T0)
        assert settle(consumer, "ack", [m["ack_id"]], now=T0 + 30_000) == (0, [m["ack_id"]])
        (again,) = pull(consumer, now=T0 + 30_001)
        assert again["delivery_attempt"] == 2

    def test_ack_twice_is_harmless(self, orders: Any) -> None:
        """A second ack of the same id changes nothing and is neither acked nor stale."""
        dest, consumer = orders
        publish(dest, {"body": "x"}, {"body": "y"})
        a, b = pull(consumer)
        assert settle(consumer, "ack", [a["ack_id"]]) == (1, [])
        assert settle(consumer, "ack", [a["ack_id"]]) == (0, [])
        # b is untouched
        assert settle(consumer, "ack", [b["ack_id"]]) == (1, [])
        assert get_redis().xlen(consumer.streams[0]) == 0

    def test_visibility_override_and_modify_deadline(self, orders: Any) -> None:
        """A pull's visibility_timeout overrides the queue's; modify-deadline extends a lease,
        and 0 makes the message deliverable at once."""
        dest, consumer = orders
        publish(dest, {"body": "x"})
        (m,) = pull(consumer, now=T0, visibility_ms=5_000)
        assert settle(consumer, "deadline", [m["ack_id"]], now=T0 + 4_000, ms=60_000) == (1, [])
        assert pull(consumer, now=T0 + 30_000) == []
        assert settle(consumer, "deadline", [m["ack_id"]], now=T0 + 30_000, ms=0) == (1, [])
        (again,) = pull(consumer, now=T0 + 30_000)
        assert again["delivery_attempt"] == 2

    def test_nack_redelivers_after_delay(self, orders: Any) -> None:
        """A nack with delay_seconds makes the message deliverable after exactly that delay."""
        dest, consumer = orders
        publish(dest, {"body": "x"})
        (m,) = pull(consumer)
        assert settle(consumer, "nack", [m["ack_id"]], now=T0, ms=10_000) == (1, [])
        assert pull(consumer, now=T0 + 9_999) == []
        (again,) = pull(consumer, now=T0 + 10_000)
        assert again["delivery_attempt"] == 2


class TestBackoffAndDeadLetters:
    def test_backoff_is_exponential_between_min_and_max(self, acme: TenantCtx) -> None:
        """With retry_backoff 2..5 s, attempt n waits min(5, 2·2^(n-1)) s after a nack."""
        dest, consumer = queue_ends(acme, retry_backoff={"min_seconds": 2, "max_seconds": 5})
        publish(dest, {"body": "x"})
        now = T0
        (m,) = pull(consumer, now=now)
        waits = []
        for _ in range(3):
            settle(consumer, "nack", [m["ack_id"]], now=now, ms=-1)
            wait = 0
            while not (got := pull(consumer, now=now + wait)):
                wait += 500
            waits.append(wait)
            (m,) = got
            now += wait
        assert waits == [2_000, 4_000, 5_000]

    def test_backoff_applies_on_lease_expiry(self, acme: TenantCtx) -> None:
        """An expired lease waits out the backoff before the message is delivered again."""
        dest, consumer = queue_ends(
            acme,
            visibility_timeout=10,
            retry_backoff={"min_seconds": 3, "max_seconds": 60},
        )
        publish(dest, {"body": "x"})
        pull(consumer, now=T0)
        assert pull(consumer, now=T0 + 12_999) == []
        (again,) = pull(consumer, now=T0 + 13_000)
        assert again["delivery_attempt"] == 2

    def test_dead_letter_after_exactly_max_deliveries(self, acme: TenantCtx) -> None:
        """With max_delivery_attempts 3, the message is delivered exactly 3 times, never a
        4th, and then sits in the dead-letter queue with the op-* attributes."""
        make_queue(tenant=acme.tenant, name="dead")
        dest, consumer = queue_ends(
            acme,
            visibility_timeout=1,
            max_delivery_attempts=3,
            dead_letter_queue="dead",
        )
        dead = queue_reader(acme, "dead")
        (published,) = publish(dest, {"body": {"n": 1}, "attributes": {"a": "b"}})
        attempts = []
        now = T0
        for _ in range(6):
            got = pull(consumer, now=now)
            attempts += [m["delivery_attempt"] for m in got]
            now += 1_000
        assert attempts == [1, 2, 3]
        assert get_redis().xlen(consumer.streams[0]) == 0
        (letter,) = pull(dead, now=now)
        assert letter["id"] == published["id"]
        assert body(letter) == {"n": 1}
        assert orjson.loads(orjson.dumps(letter["attributes"])) == {
            "a": "b",
            "op-dead-letter-source": "queue:orders",
            "op-dead-letter-reason": "max_delivery_attempts",
            "op-delivery-attempts": "3",
            "op-original-id": published["id"],
        }

    def test_nack_at_max_attempts_dead_letters_at_once(self, acme: TenantCtx) -> None:
        """A nack of the last allowed delivery moves the message to the dead-letter queue."""
        make_queue(tenant=acme.tenant, name="dead")
        dest, consumer = queue_ends(acme, max_delivery_attempts=1, dead_letter_queue="dead")
        dead = queue_reader(acme, "dead")
        publish(dest, {"body": "x"})
        (m,) = pull(consumer)
        assert settle(consumer, "nack", [m["ack_id"]]) == (1, [])
        assert pull(consumer, now=T0 + 100_000) == []
        assert [body(x) for x in pull(dead)] == ["x"]

    def test_housekeeping_dead_letters_without_a_pull(self, acme: TenantCtx) -> None:
        """Celery's housekeeping moves expired last deliveries to the dead-letter queue even
        when nobody pulls from the source."""
        make_queue(tenant=acme.tenant, name="dead")
        dest, consumer = queue_ends(
            acme,
            visibility_timeout=0,
            max_delivery_attempts=1,
            dead_letter_queue="dead",
        )
        publish(dest, {"body": "x"}, now=now_ms())
        assert len(pull(consumer, now=now_ms())) == 1
        services.housekeeping_all()
        assert get_redis().xlen(consumer.streams[0]) == 0
        dead = queue_reader(acme, "dead")
        assert get_redis().xlen(dead.streams[0]) == 1


class TestDelayAndDedup:
    def test_delayed_message_not_deliverable_before_due(self, acme: TenantCtx) -> None:
        """delay_seconds holds a message back exactly that long; its offset is null until due."""
        dest, consumer = queue_ends(acme)
        (result,) = publish(dest, {"body": "later", "delay_seconds": 5})
        assert result["offset"] is None
        assert pull(consumer, now=T0 + 4_999) == []
        (m,) = pull(consumer, now=T0 + 5_000)
        assert body(m) == "later"

    def test_queue_default_delay(self, acme: TenantCtx) -> None:
        """A queue's delay_seconds applies when the message does not say otherwise."""
        dest, consumer = queue_ends(acme, delay_seconds=10)
        publish(dest, {"body": "a"}, {"body": "b", "delay_seconds": 0})
        assert [body(m) for m in pull(consumer, now=T0)] == ["b"]
        assert [body(m) for m in pull(consumer, now=T0 + 10_000)] == ["a"]

    def test_dedup_within_window_returns_first_id_and_stores_nothing(self, acme: TenantCtx) -> None:
        """A repeated dedup_id within 5 minutes is not stored again and returns the first id."""
        dest, consumer = queue_ends(acme)
        first, second = publish(dest, {"body": 1, "dedup_id": "d"}, {"body": 2, "dedup_id": "d"})
        (third,) = publish(dest, {"body": 3, "dedup_id": "d"})
        assert first["duplicate"] is False
        assert second == {**first, "duplicate": True}
        assert third == {**first, "duplicate": True}
        assert [body(m) for m in pull(consumer)] == [1]
        ttl = get_redis().ttl(dest.dedup_prefix + "d")
        assert 290 < ttl <= 300


class TestTopics:
    def test_fan_out_filters_and_independence(self, acme: TenantCtx) -> None:
        """Every subscription gets every message published after it was created that matches
        its filter; acking on one does not affect the other."""
        topic = make_topic(tenant=acme.tenant, name="events", partitions=3)
        make_subscription(tenant=acme.tenant, name="all", topic="events")
        make_subscription(
            tenant=acme.tenant, name="red", topic="events", filter={"attributes": {"color": "red"}}
        )
        tid = str(acme.tenant.id)
        dest = topic_destination(tid, selectors.topic_document(topic))
        everything = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "all"))
        red = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "red"))
        publish(
            dest,
            {"body": 1, "attributes": {"color": "red"}},
            {"body": 2, "attributes": {"color": "blue"}},
            {"body": 3},
            {"body": 4, "attributes": {"color": "red", "size": "L"}},
        )
        got_all = pull(everything, 100)
        assert sorted(body(m) for m in got_all) == [1, 2, 3, 4]
        got_red = pull(red, 100)
        assert sorted(body(m) for m in got_red) == [1, 4]
        assert settle(everything, "ack", [m["ack_id"] for m in got_all]) == (4, [])
        # red's leases are untouched by all's acks
        assert settle(red, "ack", [m["ack_id"] for m in got_red]) == (2, [])

    def test_same_key_same_partition_in_order(self, acme: TenantCtx) -> None:
        """Messages with one key land on one partition and are read there in publish order."""
        topic = make_topic(tenant=acme.tenant, name="events", partitions=8)
        dest = topic_destination(str(acme.tenant.id), selectors.topic_document(topic))
        results = publish(dest, *({"body": i, "key": "customer-42"} for i in range(20)))
        partitions = {r["partition"] for r in results}
        assert len(partitions) == 1
        (p,) = partitions
        log = streams.log_read(
            get_redis(), str(acme.tenant.id), str(topic.id), partition=p, after=None, limit=100
        )
        assert [body(m) for m in log] == list(range(20))
        assert [m["offset"] for m in log] == [r["offset"] for r in results]

    def test_subscription_created_later_starts_at_latest(self, acme: TenantCtx) -> None:
        """A subscription receives only messages published after it was created, unless it
        starts at earliest."""
        topic = make_topic(tenant=acme.tenant, name="events")
        tid = str(acme.tenant.id)
        dest = topic_destination(tid, selectors.topic_document(topic))
        publish(dest, {"body": "old"})
        make_subscription(tenant=acme.tenant, name="late", topic="events")
        make_subscription(tenant=acme.tenant, name="replay", topic="events", start_at="earliest")
        publish(dest, {"body": "new"})
        late = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "late"))
        replay = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "replay"))
        assert [body(m) for m in pull(late)] == ["new"]
        assert [body(m) for m in pull(replay)] == ["old", "new"]


class TestConcurrency:
    def test_concurrent_consumers_never_share_a_leased_message(self, acme: TenantCtx) -> None:
        """Eight threads pulling from one queue at once receive each message exactly once
        while the leases hold."""
        dest, consumer = queue_ends(acme, visibility_timeout=300)
        for start in range(0, 1000, 100):
            publish(dest, *({"body": i} for i in range(start, start + 100)), now=now_ms())
        seen: list[list[int]] = [[] for _ in range(8)]
        errors: list[BaseException] = []

        async def drain(slot: int) -> None:
            while got := (await dataplane.apull(consumer, count=7, now_ms=now_ms())).messages:
                seen[slot] += [body(m) for m in got]

        def worker(slot: int) -> None:
            try:
                asyncio.run(drain(slot))  # a loop, and so a Redis connection, per thread
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        everything = [n for part in seen for n in part]
        assert len(everything) == 1000
        assert sorted(everything) == list(range(1000))


class TestLimits:
    def test_rate_limit_rejects_whole_batch(self, acme: TenantCtx) -> None:
        """Past the plan's messages per second, a batch is refused whole (nothing stored)
        and the next second accepts again."""
        dest, consumer = queue_ends(acme)
        limits = dataplane.Limits(per_second=5)
        batch = validate_batch(
            {"messages": [{"body": i} for i in range(3)]}, max_message_bytes=1024, now_ms=T0
        )
        run(dataplane.apublish(dest, batch, T0, limits))
        with pytest.raises(RateLimited):
            run(dataplane.apublish(dest, batch, T0 + 10, limits))
        assert get_redis().xlen(consumer.streams[0]) == 3
        run(dataplane.apublish(dest, batch, T0 + 1000, limits))
        assert get_redis().xlen(consumer.streams[0]) == 6

    def test_monthly_quota(self, acme: TenantCtx) -> None:
        """Past the plan's monthly messages, publishing is refused and stores nothing."""
        dest, consumer = queue_ends(acme)
        limits = dataplane.Limits(per_month=4)
        batch = validate_batch(
            {"messages": [{"body": i} for i in range(3)]}, max_message_bytes=1024, now_ms=T0
        )
        run(dataplane.apublish(dest, batch, T0, limits))
        with pytest.raises(QuotaExceeded):
            run(dataplane.apublish(dest, batch, T0 + 5000, limits))
        assert get_redis().xlen(consumer.streams[0]) == 3


class TestDeletedQueue:
    def test_engine_calls_on_a_deleted_queue_are_gone_and_write_nothing(
        self, acme: TenantCtx
    ) -> None:
        """Publish (now and delayed), pull and nack with a deleted queue's document raise
        Gone and leave no key of that queue behind; so does a purge."""
        queue = make_queue(tenant=acme.tenant, name="jobs")
        dest, consumer = queue_writer(acme, "jobs"), queue_reader(acme, "jobs")
        now = now_ms()
        publish(dest, {"body": 1}, now=now)
        (message,) = pull(consumer, now=now)
        services.queue_delete(tenant=acme.tenant, actor="test", queue=queue)
        assert redis_keys_of(str(queue.id)) == []

        for delay in (0, 30):
            with pytest.raises(dataplane.Gone):
                publish(dest, {"body": 2, "delay_seconds": delay, "dedup_id": f"d{delay}"}, now=now)
        with pytest.raises(dataplane.Gone):
            pull(consumer, now=now + 60_000)
        with pytest.raises(dataplane.Gone):
            settle(consumer, "nack", [message["ack_id"]], now=now)
        with pytest.raises(dataplane.Gone):
            streams.purge(get_redis(), consumer)

        assert redis_keys_of(str(queue.id)) == []
