"""What the engine's streams module reads and changes besides the hot path: consumer stats,
purge, consumer positions in PostgreSQL, and rebuilding streams after a Redis data loss."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from kernel.redis_client import get_redis
from queues import selectors, services, tasks
from queues.engine import streams
from queues.engine.messages import now_ms
from queues.engine.targets import (
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from queues.models import ConsumerPosition
from tests.engine import (
    ack,
    bodies,
    publish,
    publish_to_queue,
    pull,
    queue_reader,
    queue_writer,
    settle,
)
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic


def _publish(dest: Any, count: int) -> list[dict[str, Any]]:
    return publish(dest, *({"body": i} for i in range(count)))


@pytest.fixture
def orders(acme: TenantCtx) -> tuple[Any, Any]:
    """A new queue's destination and consumer."""
    make_queue(tenant=acme.tenant, name="orders")
    return queue_writer(acme, "orders"), queue_reader(acme, "orders")


def _group(stream: str, group: str) -> dict[str, Any] | None:
    for info in get_redis().xinfo_groups(stream):
        if info["name"].decode() == group:
            return info
    return None


def test_snapshot_records_delivered_and_acked_positions(acme: TenantCtx) -> None:
    """Beat's snapshot stores, per partition, the last delivered id and the id up to which
    everything is acknowledged (just before the oldest unacknowledged delivery)."""
    queue = make_queue(tenant=acme.tenant, name="orders")
    doc = selectors.queue_document(queue)
    tid = str(acme.tenant.id)
    published = _publish(queue_destination(tid, doc), 3)
    consumer = queue_consumer(tid, doc)
    first, second, _third = pull(consumer, 3)
    ack(consumer, [first])
    assert tasks.snapshot_positions() == 1
    (position,) = ConsumerPosition.objects.for_tenant(acme.tenant).filter(queue=queue)
    assert position.partition == 0
    assert position.last_delivered_id == published[2]["offset"]
    ms, seq = map(int, second["offset"].split("-"))
    expected_acked = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    assert position.acked_id == expected_acked
    assert position.last_generated_id == published[2]["offset"]


def test_streams_rebuild_recreates_missing_streams_and_groups(acme: TenantCtx) -> None:
    """After Redis lost a queue's stream and a subscription's groups, streams_rebuild
    recreates them at the snapshotted positions, says what it did, and then has nothing
    left to do; offsets continue after the lost ones."""
    queue = make_queue(tenant=acme.tenant, name="orders")
    topic = make_topic(tenant=acme.tenant, name="events", partitions=2)
    sub = make_subscription(tenant=acme.tenant, name="audit", topic="events")
    tid = str(acme.tenant.id)
    qdoc = selectors.queue_document(queue)
    sdoc = selectors.subscription_document(sub)
    last = _publish(queue_destination(tid, qdoc), 2)[-1]["offset"]
    _publish(topic_destination(tid, selectors.topic_document(topic)), 4)
    qc = queue_consumer(tid, qdoc)
    sc = subscription_consumer(tid, sdoc)
    ack(qc, pull(qc, 2))
    assert tasks.snapshot_positions() == 2
    # the data loss: the queue's stream is gone, the subscription's groups too
    get_redis().delete(qc.streams[0])
    for stream in sc.streams:
        get_redis().xgroup_destroy(stream, sc.group)

    out = StringIO()
    call_command("streams_rebuild", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "rebuilt 3 consumer group(s)"
    assert sum("queue:orders" in line and "created stream and group" in line for line in lines) == 1
    assert sum("subscription:audit" in line and "created group" in line for line in lines) == 2
    assert _group(qc.streams[0], qc.group) is not None
    assert all(_group(stream, sc.group) is not None for stream in sc.streams)
    # new queue offsets continue after the lost ones
    (after,) = _publish(queue_destination(tid, qdoc), 1)
    assert tuple(map(int, after["offset"].split("-"))) > tuple(map(int, last.split("-")))

    again = StringIO()
    call_command("streams_rebuild", stdout=again)
    assert again.getvalue().strip() == "nothing to rebuild: every stream and consumer group exists"


def test_seek_snapshots_positions(acme: TenantCtx) -> None:
    """A seek writes the subscription's new positions to PostgreSQL at once."""
    topic = make_topic(tenant=acme.tenant, name="events")
    sub = make_subscription(tenant=acme.tenant, name="audit", topic="events")
    published = _publish(topic_destination(str(acme.tenant.id), selectors.topic_document(topic)), 3)
    services.subscription_seek(tenant=acme.tenant, actor="test", subscription=sub, to="latest")
    (position,) = ConsumerPosition.objects.for_tenant(acme.tenant).filter(subscription=sub)
    assert position.last_delivered_id == published[-1]["offset"]
    services.subscription_seek(tenant=acme.tenant, actor="test", subscription=sub, to="earliest")
    position.refresh_from_db()
    assert position.last_delivered_id == "0-0"


class TestStatsAndPurge:
    def test_stats_count_exactly(self, orders: tuple[Any, Any]) -> None:
        """available, in_flight and delayed count exactly what a pull would see."""
        dest, consumer = orders
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

    def test_stats_count_due_delays_as_available(self, orders: tuple[Any, Any]) -> None:
        """A delayed message whose time has come is available in the stats before anything
        moved it into the stream (a pull would deliver it), and the pull agrees."""
        dest, consumer = orders
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
        make_queue(tenant=acme.tenant, name="parked")
        make_queue(
            tenant=acme.tenant,
            name="slow",
            visibility_timeout=1,
            retry_backoff={"min_seconds": 5, "max_seconds": 5},
        )
        make_queue(
            tenant=acme.tenant,
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

    def test_purge_removes_everything_and_offsets_stay_monotonic(
        self, orders: tuple[Any, Any]
    ) -> None:
        """Purge removes stored and delayed messages; later offsets are larger than earlier."""
        dest, consumer = orders
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
        assert bodies(pull(consumer, now=now_ms())) == [4]


def _queue_state(consumer: Any) -> dict[str, Any]:
    """Every structure of a queue that names entry ids, plus its delay set's size."""
    redis = get_redis()
    stream, lease, retry = consumer.streams[0], consumer.leases[0], consumer.retries[0]
    pending = redis.xpending_range(stream, consumer.group, min="-", max="+", count=100)
    return {
        "stream": [entry_id.decode() for entry_id, _ in redis.xrange(stream)],
        "pending": [(p["message_id"].decode(), p["times_delivered"]) for p in pending],
        "leases": [m.decode() for m in redis.zrange(lease, 0, -1)],
        "retries": [m.decode() for m in redis.zrange(retry, 0, -1)],
        "delayed": redis.zcard(consumer.delays[0]),
    }


def test_delete_ids_removes_present_and_in_flight_entries_and_counts_absent_ones_0(
    orders: tuple[Any, Any],
) -> None:
    """Deleting an in-flight, a retrying, an available and an absent id deletes the three
    stored entries with their pending entries, lease and retry (count 3); the other in-flight
    and available messages and the delayed one stay as they were, and the deleted ones are
    never delivered again. Deleting them once more deletes nothing."""
    dest, consumer = orders
    now = now_ms()
    sent = publish(
        dest, *({"body": i} for i in range(5)), {"body": 5, "delay_seconds": 60}, now=now
    )
    m0, m1, m2, m3, m4 = (message["offset"] for message in sent[:5])
    leased = pull(consumer, 3, now=now)
    assert bodies(leased) == [0, 1, 2]
    assert settle(consumer, "nack", [leased[1]["ack_id"]], ms=30_000, now=now) == (1, [])
    assert _queue_state(consumer) == {
        "stream": [m0, m1, m2, m3, m4],
        "pending": [(m0, 1), (m1, 1), (m2, 1)],
        "leases": [m0, m2],
        "retries": [m1],
        "delayed": 1,
    }
    absent = "1-0"  # a well-formed id the stream never held

    assert streams.delete_ids(get_redis(), consumer, [m0, m1, m3, absent]) == 3

    after = {
        "stream": [m2, m4],
        "pending": [(m2, 1)],
        "leases": [m2],
        "retries": [],
        "delayed": 1,
    }
    assert _queue_state(consumer) == after
    assert streams.delete_ids(get_redis(), consumer, [m0, m1, m3, absent]) == 0
    assert _queue_state(consumer) == after
    # Past m2's lease and m1's retry: only what was not deleted comes back, m2 redelivered.
    later = pull(consumer, 10, now=now + 40_000)
    assert [(m["offset"], m["delivery_attempt"]) for m in later] == [(m2, 2), (m4, 1)]
