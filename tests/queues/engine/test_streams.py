"""Consumer positions in PostgreSQL, and rebuilding streams after a Redis data loss."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.core.management import call_command

from kernel.redis_client import get_redis
from queues import selectors, services, tasks
from queues.engine import dataplane
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import (
    queue_consumer,
    queue_destination,
    subscription_consumer,
    topic_destination,
)
from queues.models import ConsumerPosition
from tests.conftest import TenantCtx


def _publish(dest: Any, count: int) -> list[dict[str, Any]]:
    now = now_ms()
    batch = validate_batch(
        {"messages": [{"body": i} for i in range(count)]}, max_message_bytes=1024, now_ms=now
    )
    return dataplane.publish(get_redis(), dest, batch, now)


def _group(stream: str, group: str) -> dict[str, Any] | None:
    for info in get_redis().xinfo_groups(stream):
        if info["name"].decode() == group:
            return info
    return None


def test_snapshot_records_delivered_and_acked_positions(acme: TenantCtx) -> None:
    """Beat's snapshot stores, per partition, the last delivered id and the id up to which
    everything is acknowledged (just before the oldest unacknowledged delivery)."""
    queue = services.queue_create(tenant=acme.tenant, actor="test", name="orders")
    doc = selectors.queue_document(queue)
    tid = str(acme.tenant.id)
    published = _publish(queue_destination(tid, doc), 3)
    consumer = queue_consumer(tid, doc)
    first, second, _third = dataplane.pull(get_redis(), consumer, count=3, now_ms=now_ms()).messages
    dataplane.settle(get_redis(), consumer, "ack", [first["ack_id"]], ms=0, now_ms=now_ms())
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
    queue = services.queue_create(tenant=acme.tenant, actor="test", name="orders")
    topic = services.topic_create(tenant=acme.tenant, actor="test", name="events", partitions=2)
    sub = services.subscription_create(
        tenant=acme.tenant, actor="test", name="audit", topic="events"
    )
    tid = str(acme.tenant.id)
    qdoc = selectors.queue_document(queue)
    sdoc = selectors.subscription_document(sub)
    last = _publish(queue_destination(tid, qdoc), 2)[-1]["offset"]
    _publish(topic_destination(tid, selectors.topic_document(topic)), 4)
    qc = queue_consumer(tid, qdoc)
    sc = subscription_consumer(tid, sdoc)
    pulled = dataplane.pull(get_redis(), qc, count=2, now_ms=now_ms()).messages
    dataplane.settle(get_redis(), qc, "ack", [m["ack_id"] for m in pulled], ms=0, now_ms=now_ms())
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
    topic = services.topic_create(tenant=acme.tenant, actor="test", name="events")
    sub = services.subscription_create(
        tenant=acme.tenant, actor="test", name="audit", topic="events"
    )
    published = _publish(topic_destination(str(acme.tenant.id), selectors.topic_document(topic)), 3)
    services.subscription_seek(tenant=acme.tenant, actor="test", subscription=sub, to="latest")
    (position,) = ConsumerPosition.objects.for_tenant(acme.tenant).filter(subscription=sub)
    assert position.last_delivered_id == published[-1]["offset"]
    services.subscription_seek(tenant=acme.tenant, actor="test", subscription=sub, to="earliest")
    position.refresh_from_db()
    assert position.last_delivered_id == "0-0"
