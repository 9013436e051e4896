"""The data-plane service (queues.messaging): resolving a resource for a key, publish, pull
with the long poll, settle, and the stale-copy retry, called as the API and the console call
it (the HTTP side is tests/api/views/test_messages.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from kernel.errors import Forbidden, InvalidRequest, NotFound
from queues import messaging, selectors
from queues.engine import dataplane
from queues.engine.messages import now_ms, validate_batch
from queues.engine.targets import queue_consumer, queue_destination
from queues.engine.waiters import get_notifier
from queues.services import queue_delete
from tenants.principals import Principal, authenticate
from tests.factories import (
    ACTOR,
    TenantCtx,
    make_key,
    make_queue,
    make_subscription,
    make_tenant,
    make_topic,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_worker_connections() -> Any:
    """The ORM calls here run in asgiref's worker thread: close its connection so the test
    database can be dropped at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


def bodies(messages: list[dict[str, Any]]) -> list[Any]:
    """The bodies as JSON values (a delivery carries each as its stored JSON text)."""
    return [orjson.loads(orjson.dumps(m["body"])) for m in messages]


async def principal_of(token: str) -> Principal:
    return await sync_to_async(authenticate)(f"Bearer {token}")


async def shop() -> TenantCtx:
    """A tenant with queue "orders", topic "events" and its subscription "audit"."""
    ctx = await sync_to_async(make_tenant)(name="Shop")
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="orders")
    await sync_to_async(make_topic)(tenant=ctx.tenant, name="events", partitions=2)
    await sync_to_async(make_subscription)(tenant=ctx.tenant, name="audit", topic="events")
    return ctx


async def test_resolve_is_404_for_an_unknown_name_and_for_another_tenants() -> None:
    ctx = await shop()
    other = await sync_to_async(make_tenant)(name="Other")
    await sync_to_async(make_queue)(tenant=other.tenant, name="private")
    principal = await principal_of(ctx.key)

    with pytest.raises(NotFound, match=r"No such queue\."):
        await messaging.resolve(principal, "queue", "nowhere")
    with pytest.raises(NotFound, match=r"No such queue\."):
        await messaging.resolve(principal, "queue", "private")
    doc = await messaging.resolve(principal, "queue", "orders")
    assert (doc["kind"], doc["name"]) == ("queue", "orders")


async def test_resolve_checks_the_key_and_a_topic_pattern_covers_its_subscriptions() -> None:
    ctx = await shop()
    by_topic = await sync_to_async(make_key)(tenant=ctx.tenant, resources=["topic:events"])
    by_queue = await sync_to_async(make_key)(tenant=ctx.tenant, resources=["queue:orders"])
    topic_key, queue_key = await principal_of(by_topic.secret), await principal_of(by_queue.secret)

    assert (await messaging.resolve(topic_key, "subscription", "audit"))["name"] == "audit"
    with pytest.raises(Forbidden, match="does not cover queue 'orders'"):
        await messaging.resolve(topic_key, "queue", "orders")
    with pytest.raises(Forbidden, match="does not cover subscription 'audit'"):
        await messaging.resolve(queue_key, "subscription", "audit")
    # 404 comes before 403: a name the tenant does not have is never a 403
    with pytest.raises(NotFound):
        await messaging.resolve(queue_key, "queue", "nowhere-else")


async def test_publish_pull_and_settle_through_the_service() -> None:
    ctx = await shop()
    principal = await principal_of(ctx.key)
    queue = await messaging.resolve(principal, "queue", "orders")

    published = await messaging.publish(
        principal, "queue", queue, {"messages": [{"body": 1}, {"body": 2, "dedup_id": "x"}]}
    )
    again = await messaging.publish(principal, "queue", queue, {"body": 3, "dedup_id": "x"})
    pulled = await messaging.pull(principal, "queue", queue, count=10)
    acked = await messaging.settle(principal, "queue", queue, "ack", [pulled[0]["ack_id"]])
    with pytest.raises(InvalidRequest):  # a malformed ack id settles nothing
        await messaging.settle(principal, "queue", queue, "ack", [pulled[1]["ack_id"], "x"])

    assert [p["duplicate"] for p in published] == [False, False]
    assert again[0]["duplicate"] is True
    assert again[0]["id"] == published[1]["id"]
    assert bodies(pulled) == [1, 2]
    assert acked == (1, [])
    (stats,) = await sync_to_async(selectors.live_stats)(
        [await sync_to_async(selectors.queue_get)(tenant=ctx.tenant, name="orders")]
    )
    assert (stats["available"], stats["in_flight"], stats["delayed"]) == (0, 1, 0)


async def test_an_invalid_batch_stores_nothing() -> None:
    ctx = await shop()
    principal = await principal_of(ctx.key)
    queue = await messaging.resolve(principal, "queue", "orders")

    with pytest.raises(InvalidRequest):
        await messaging.publish(
            principal, "queue", queue, {"messages": [{"body": 1}, {"body": 2, "nope": 1}]}
        )
    assert await messaging.pull(principal, "queue", queue, count=10) == []


async def test_a_stale_copy_of_a_deleted_queue_is_a_404_and_stores_nothing() -> None:
    ctx = await shop()
    principal = await principal_of(ctx.key)
    stale = await messaging.resolve(principal, "queue", "orders")
    row = await sync_to_async(selectors.queue_get)(tenant=ctx.tenant, name="orders")
    await sync_to_async(queue_delete)(tenant=ctx.tenant, actor=ACTOR, queue=row)

    with pytest.raises(NotFound, match=r"No such queue\."):
        await messaging.publish(principal, "queue", stale, {"body": "lost?"})
    with pytest.raises(NotFound, match=r"No such queue\."):
        await messaging.pull(principal, "queue", stale, count=1)


async def test_a_stale_copy_reaches_the_queue_created_again_under_its_name() -> None:
    """The retry runs against the resource PostgreSQL has now, checked against the key."""
    ctx = await shop()
    principal = await principal_of(ctx.key)
    stale = await messaging.resolve(principal, "queue", "orders")
    row = await sync_to_async(selectors.queue_get)(tenant=ctx.tenant, name="orders")
    await sync_to_async(queue_delete)(tenant=ctx.tenant, actor=ACTOR, queue=row)
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="orders")

    await messaging.publish(principal, "queue", stale, {"body": "reborn"})
    current = await messaging.resolve(principal, "queue", "orders")
    assert current["id"] != stale["id"]
    assert bodies(await messaging.pull(principal, "queue", current, count=5)) == ["reborn"]


async def test_a_thousand_waiters_on_one_event_loop() -> None:
    """1,000 pulls wait on one event loop (no thread each) and every one is woken and
    served when 1,000 messages are published."""
    ctx = await sync_to_async(make_tenant)(name="Crowd")
    queue = await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    consumer = queue_consumer(
        str(ctx.tenant.id), await sync_to_async(selectors.queue_document)(queue)
    )

    waiters = [
        asyncio.ensure_future(
            messaging.pull_messages(consumer, count=1, wait_seconds=15, visibility_ms=None)
        )
        for _ in range(1000)
    ]
    for _ in range(200):
        if get_notifier().waiting == 1000:
            break
        await asyncio.sleep(0.05)
    assert get_notifier().waiting == 1000

    dest = queue_destination(
        str(ctx.tenant.id), await sync_to_async(selectors.queue_document)(queue)
    )

    for start in range(0, 1000, 100):
        batch = validate_batch(
            {"messages": [{"body": i} for i in range(start, start + 100)]},
            max_message_bytes=1024,
            now_ms=now_ms(),
        )
        await dataplane.apublish(dest, batch, now_ms())
    results = await asyncio.wait_for(asyncio.gather(*waiters), 14)
    ids = [m["id"] for r in results for m in r]
    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    assert get_notifier().waiting == 0
