"""The message engine's semantics against a real Redis, with an explicit clock.

Every engine call takes ``now_ms``, so lease expiry, backoff and delays are tested by moving
the clock forward instead of sleeping.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from kernel.errors import QuotaExceeded, RateLimited
from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine import dataplane, streams
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import (
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from tests.conftest import TenantCtx
from tests.queues.helpers import bodies, publish_to_queue, queue_reader

T0 = 1_800_000_000_000  # a fixed clock, in ms


def publish(dest: Any, *messages: dict[str, Any], now: int = T0) -> list[dict[str, Any]]:
    batch = validate_batch({"messages": list(messages)}, max_message_bytes=262144, now_ms=now)
    return dataplane.publish(get_redis(), dest, batch, now)


def body(message: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(message["body"]))


def make_queue(ctx: TenantCtx, name: str = "orders", **options: Any) -> tuple[Any, Any]:
    queue = services.queue_create(tenant=ctx.tenant, actor="test", name=name, **options)
    doc = selectors.queue_document(queue)
    tid = str(ctx.tenant.id)
    return queue_destination(tid, doc), queue_consumer(tid, doc)


@pytest.fixture
def orders(acme: TenantCtx) -> tuple[Any, Any]:
    return make_queue(acme, visibility_timeout=30)


def pull(consumer: Any, count: int = 10, now: int = T0, **kw: Any) -> list[dict[str, Any]]:
    return dataplane.pull(get_redis(), consumer, count=count, now_ms=now, **kw).messages


def settle(
    consumer: Any, mode: str, ack_ids: list[str], now: int = T0, ms: int = 0
) -> tuple[int, list[str]]:
    return dataplane.settle(get_redis(), consumer, mode, ack_ids, ms=ms, now_ms=now)


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
        dest, consumer = make_queue(acme, retry_backoff={"min_seconds": 2, "max_seconds": 5})
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
        dest, consumer = make_queue(
            acme, visibility_timeout=10, retry_backoff={"min_seconds": 3, "max_seconds": 60}
        )
        publish(dest, {"body": "x"})
        pull(consumer, now=T0)
        assert pull(consumer, now=T0 + 12_999) == []
        (again,) = pull(consumer, now=T0 + 13_000)
        assert again["delivery_attempt"] == 2

    def test_dead_letter_after_exactly_max_deliveries(self, acme: TenantCtx) -> None:
        """With max_delivery_attempts 3, the message is delivered exactly 3 times, never a
        4th, and then sits in the dead-letter queue with the op-* attributes."""
        services.queue_create(tenant=acme.tenant, actor="test", name="dead")
        dest, consumer = make_queue(
            acme, visibility_timeout=1, max_delivery_attempts=3, dead_letter_queue="dead"
        )
        _, dead = make_queue_consumer(acme, "dead")
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
        services.queue_create(tenant=acme.tenant, actor="test", name="dead")
        dest, consumer = make_queue(acme, max_delivery_attempts=1, dead_letter_queue="dead")
        _, dead = make_queue_consumer(acme, "dead")
        publish(dest, {"body": "x"})
        (m,) = pull(consumer)
        assert settle(consumer, "nack", [m["ack_id"]]) == (1, [])
        assert pull(consumer, now=T0 + 100_000) == []
        assert [body(x) for x in pull(dead)] == ["x"]

    def test_housekeeping_dead_letters_without_a_pull(self, acme: TenantCtx) -> None:
        """Celery's housekeeping moves expired last deliveries to the dead-letter queue even
        when nobody pulls from the source."""
        services.queue_create(tenant=acme.tenant, actor="test", name="dead")
        dest, consumer = make_queue(
            acme, visibility_timeout=0, max_delivery_attempts=1, dead_letter_queue="dead"
        )
        publish(dest, {"body": "x"}, now=now_ms())
        assert len(pull(consumer, now=now_ms())) == 1
        services.housekeeping_all()
        assert get_redis().xlen(consumer.streams[0]) == 0
        _, dead = make_queue_consumer(acme, "dead")
        assert get_redis().xlen(dead.streams[0]) == 1


def make_queue_consumer(ctx: TenantCtx, name: str) -> tuple[Any, Any]:
    doc = selectors.queue_document(selectors.queue_get(tenant=ctx.tenant, name=name))
    tid = str(ctx.tenant.id)
    return queue_destination(tid, doc), queue_consumer(tid, doc)


class TestDelayAndDedup:
    def test_delayed_message_not_deliverable_before_due(self, acme: TenantCtx) -> None:
        """delay_seconds holds a message back exactly that long; its offset is null until due."""
        dest, consumer = make_queue(acme)
        (result,) = publish(dest, {"body": "later", "delay_seconds": 5})
        assert result["offset"] is None
        assert pull(consumer, now=T0 + 4_999) == []
        (m,) = pull(consumer, now=T0 + 5_000)
        assert body(m) == "later"

    def test_queue_default_delay(self, acme: TenantCtx) -> None:
        """A queue's delay_seconds applies when the message does not say otherwise."""
        dest, consumer = make_queue(acme, delay_seconds=10)
        publish(dest, {"body": "a"}, {"body": "b", "delay_seconds": 0})
        assert [body(m) for m in pull(consumer, now=T0)] == ["b"]
        assert [body(m) for m in pull(consumer, now=T0 + 10_000)] == ["a"]

    def test_dedup_within_window_returns_first_id_and_stores_nothing(self, acme: TenantCtx) -> None:
        """A repeated dedup_id within 5 minutes is not stored again and returns the first id."""
        dest, consumer = make_queue(acme)
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
        topic = services.topic_create(tenant=acme.tenant, actor="test", name="events", partitions=3)
        services.subscription_create(tenant=acme.tenant, actor="test", name="all", topic="events")
        services.subscription_create(
            tenant=acme.tenant,
            actor="test",
            name="red",
            topic="events",
            filter={"attributes": {"color": "red"}},
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
        topic = services.topic_create(tenant=acme.tenant, actor="test", name="events", partitions=8)
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
        topic = services.topic_create(tenant=acme.tenant, actor="test", name="events")
        tid = str(acme.tenant.id)
        dest = topic_destination(tid, selectors.topic_document(topic))
        publish(dest, {"body": "old"})
        services.subscription_create(tenant=acme.tenant, actor="test", name="late", topic="events")
        services.subscription_create(
            tenant=acme.tenant, actor="test", name="replay", topic="events", start_at="earliest"
        )
        publish(dest, {"body": "new"})
        late = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "late"))
        replay = subscription_consumer(tid, selectors.resource_doc(tid, "subscription", "replay"))
        assert [body(m) for m in pull(late)] == ["new"]
        assert [body(m) for m in pull(replay)] == ["old", "new"]


class TestConcurrency:
    def test_concurrent_consumers_never_share_a_leased_message(self, acme: TenantCtx) -> None:
        """Eight threads pulling from one queue at once receive each message exactly once
        while the leases hold."""
        dest, consumer = make_queue(acme, visibility_timeout=300)
        for start in range(0, 1000, 100):
            publish(dest, *({"body": i} for i in range(start, start + 100)), now=now_ms())
        seen: list[list[int]] = [[] for _ in range(8)]
        errors: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                while got := dataplane.pull(
                    get_redis(), consumer, count=7, now_ms=now_ms()
                ).messages:
                    seen[slot] += [body(m) for m in got]
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


class TestPurgeRedriveStats:
    def test_stats_count_exactly(self, acme: TenantCtx) -> None:
        """available, in_flight and delayed count exactly what a pull would see."""
        dest, consumer = make_queue(acme)
        publish(
            dest,
            {"body": 1},
            {"body": 2},
            {"body": 3},
            {"body": 4, "delay_seconds": 60},
            now=now_ms(),
        )
        pull(consumer, 1, now=now_ms())
        stats = streams.consumer_stats(get_redis(), consumer, now_ms())
        assert stats["available"] == 2
        assert stats["in_flight"] == 1
        assert stats["delayed"] == 1

    def test_stats_count_due_delays_as_available(self, acme: TenantCtx) -> None:
        """A delayed message whose time has come is available in the stats before anything
        moved it into the stream (a pull would deliver it), and the pull agrees."""
        dest, consumer = make_queue(acme)
        start = now_ms()
        publish(dest, {"body": 1, "delay_seconds": 5}, {"body": 2, "delay_seconds": 60}, now=start)
        later = start + 6_000

        stats = streams.consumer_stats(get_redis(), consumer, later)

        assert (stats["available"], stats["in_flight"], stats["delayed"]) == (1, 0, 1)
        assert bodies(pull(consumer, 10, now=later)) == [1]

    def test_current_stats_agree_with_the_next_pull(self, acme: TenantCtx) -> None:
        """After a lease expires, current_stats does the due work first, as a pull would: with
        a backoff to wait out the message counts as delayed (and a pull returns nothing), and
        at max_delivery_attempts it is a dead letter, not available at the source."""
        services.queue_create(tenant=acme.tenant, actor="test", name="parked")
        services.queue_create(
            tenant=acme.tenant,
            actor="test",
            name="slow",
            visibility_timeout=1,
            retry_backoff={"min_seconds": 5, "max_seconds": 5},
        )
        services.queue_create(
            tenant=acme.tenant,
            actor="test",
            name="last",
            visibility_timeout=1,
            max_delivery_attempts=1,
            dead_letter_queue="parked",
        )
        start = now_ms()
        readers = {}
        for name in ("slow", "last"):
            publish_to_queue(acme, name, {"body": name}, now=start)
            readers[name] = queue_reader(acme, name)
            assert len(pull(readers[name], 10, now=start)) == 1
        expired = start + 2_000
        slow, last, parked = streams.current_stats(
            get_redis(), [readers["slow"], readers["last"], queue_reader(acme, "parked")], expired
        )

        assert (slow["available"], slow["in_flight"], slow["delayed"]) == (0, 0, 1)
        assert pull(readers["slow"], 10, now=expired) == []
        assert (last["available"], last["in_flight"], last["delayed"]) == (0, 0, 0)
        assert (parked["available"], parked["in_flight"], parked["delayed"]) == (1, 0, 0)

    def test_purge_removes_everything_and_offsets_stay_monotonic(self, acme: TenantCtx) -> None:
        """Purge removes stored and delayed messages; later offsets are larger than earlier."""
        dest, consumer = make_queue(acme)
        results = publish(
            dest, {"body": 1}, {"body": 2}, {"body": 3, "delay_seconds": 9}, now=now_ms()
        )
        pull(consumer, 1, now=now_ms())
        assert streams.purge(get_redis(), consumer) == 3
        assert pull(consumer, now=now_ms() + 100_000) == []
        (after,) = publish(dest, {"body": 4}, now=now_ms())
        assert tuple(map(int, after["offset"].split("-"))) > tuple(
            map(int, results[1]["offset"].split("-"))
        )
        assert [body(m) for m in pull(consumer, now=now_ms())] == [4]


class TestLimits:
    def test_rate_limit_rejects_whole_batch(self, acme: TenantCtx) -> None:
        """Past the plan's messages per second, a batch is refused whole (nothing stored)
        and the next second accepts again."""
        dest, consumer = make_queue(acme)
        limits = dataplane.Limits(per_second=5)
        batch = validate_batch(
            {"messages": [{"body": i} for i in range(3)]}, max_message_bytes=1024, now_ms=T0
        )
        dataplane.publish(get_redis(), dest, batch, T0, limits)
        with pytest.raises(RateLimited):
            dataplane.publish(get_redis(), dest, batch, T0 + 10, limits)
        assert get_redis().xlen(consumer.streams[0]) == 3
        dataplane.publish(get_redis(), dest, batch, T0 + 1000, limits)
        assert get_redis().xlen(consumer.streams[0]) == 6

    def test_monthly_quota(self, acme: TenantCtx) -> None:
        """Past the plan's monthly messages, publishing is refused and stores nothing."""
        dest, consumer = make_queue(acme)
        limits = dataplane.Limits(per_month=4)
        batch = validate_batch(
            {"messages": [{"body": i} for i in range(3)]}, max_message_bytes=1024, now_ms=T0
        )
        dataplane.publish(get_redis(), dest, batch, T0, limits)
        with pytest.raises(QuotaExceeded):
            dataplane.publish(get_redis(), dest, batch, T0 + 5000, limits)
        assert get_redis().xlen(consumer.streams[0]) == 3
