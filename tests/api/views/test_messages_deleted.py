"""Deleted resources stay deleted: a process acting on a cached copy of a queue, topic or
subscription that was deleted stores nothing, leases nothing and recreates no Redis key; its
request answers 404, or reaches the resource that took the name since. After Redis lost a
resource's structures, the next request rebuilds them from PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.test import Client

from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine import dataplane, streams
from queues.engine.messages import now_ms
from queues.engine.targets import queue_consumer, queue_destination, queue_keys
from tests.conftest import TenantCtx
from tests.helpers import assert_problem
from tests.queues.helpers import publish_to_queue, pull, queue_reader

pytestmark = pytest.mark.django_db

JSON = "application/json"


def post(client: Client, path: str, data: Any) -> Any:
    return client.post(path, data=json.dumps(data), content_type=JSON)


def keys_of(resource_id: str) -> list[bytes]:
    """Every Redis key that belongs to the resource with this id."""
    return sorted(get_redis().keys(f"*{resource_id.replace('-', '')}*"))


def stale(ctx: TenantCtx, kind: str, doc: dict[str, Any]) -> None:
    """Make this process trust ``doc`` again, as another web process whose copy has not
    expired yet would."""
    ident = selectors.resource_ident(str(ctx.tenant.id), kind, doc["name"])
    selectors.resource_cache._local[ident] = (time.monotonic() + 60, doc)


def queue_doc(ctx: TenantCtx, name: str) -> dict[str, Any]:
    return selectors.queue_document(selectors.queue_get(tenant=ctx.tenant, name=name))


# --- the engine ---------------------------------------------------------------------------------


def test_engine_calls_on_a_deleted_queue_are_gone_and_write_nothing(acme: TenantCtx) -> None:
    """Publish (now and delayed), pull and ack with a deleted queue's document raise Gone and
    leave no key of that queue behind."""
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    doc = queue_doc(acme, "jobs")
    publish_to_queue(acme, "jobs", {"body": 1})
    (message,) = pull(queue_reader(acme, "jobs"))
    services.queue_delete(
        tenant=acme.tenant, actor="test", queue=selectors.queue_get(tenant=acme.tenant, name="jobs")
    )
    assert keys_of(doc["id"]) == []
    tenant_id, redis, now = str(acme.tenant.id), get_redis(), now_ms()
    dest = queue_destination(tenant_id, doc)
    consumer = queue_consumer(tenant_id, doc)
    from queues.engine.messages import validate_batch

    for delay in (0, 30):
        batch = validate_batch(
            {"body": 2, "delay_seconds": delay, "dedup_id": f"d{delay}"},
            max_message_bytes=1024,
            now_ms=now,
        )
        with pytest.raises(dataplane.Gone):
            dataplane.publish(redis, dest, batch, now)
    with pytest.raises(dataplane.Gone):
        dataplane.pull(redis, consumer, count=10, now_ms=now + 60_000)
    with pytest.raises(dataplane.Gone):
        dataplane.settle(redis, consumer, "nack", [message["ack_id"]], ms=0, now_ms=now)
    with pytest.raises(dataplane.Gone):
        streams.purge(redis, consumer)

    assert keys_of(doc["id"]) == []


# --- over HTTP ----------------------------------------------------------------------------------


def test_publish_with_a_stale_copy_of_a_deleted_queue_is_404(acme: TenantCtx) -> None:
    """A web process that still trusts its copy of a deleted queue answers 404 to a publish
    and a pull, stores nothing and recreates none of the queue's keys."""
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    doc = queue_doc(acme, "jobs")
    assert post(acme.client, "/v1/queues/jobs/messages", {"body": 1}).status_code == 201
    assert acme.client.delete("/v1/queues/jobs").status_code == 204
    stale(acme, "queue", doc)

    published = post(acme.client, "/v1/queues/jobs/messages", {"body": 2, "delay_seconds": 5})
    stale(acme, "queue", doc)
    pulled = post(acme.client, "/v1/queues/jobs/pull", {"max_messages": 10})
    stale(acme, "queue", doc)
    acked = post(acme.client, "/v1/queues/jobs/ack", {"ack_ids": ["0.1-0.1"]})

    for response in (published, pulled, acked):
        assert_problem(response, 404, "not_found")
    assert keys_of(doc["id"]) == []


def test_publish_with_a_stale_copy_reaches_the_queue_that_took_the_name(
    acme: TenantCtx,
) -> None:
    """Deleted and created again under the same name: a publish through a stale copy of the
    old queue lands in the new one (and is delivered from it); the old one gets no key."""
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    old = queue_doc(acme, "jobs")
    assert acme.client.delete("/v1/queues/jobs").status_code == 204
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    new = queue_doc(acme, "jobs")
    stale(acme, "queue", old)

    published = post(acme.client, "/v1/queues/jobs/messages", {"body": "after"})
    stale(acme, "queue", old)
    pulled = post(acme.client, "/v1/queues/jobs/pull", {"max_messages": 10})

    assert published.status_code == 201
    (item,) = published.json()["messages"]
    assert [m["id"] for m in pulled.json()["messages"]] == [item["id"]]
    assert keys_of(old["id"]) == []
    assert new["id"] != old["id"]


def test_topic_and_subscription_deleted_under_a_stale_copy(acme: TenantCtx) -> None:
    """A deleted subscription's pull is 404 and leaves its topic's streams alone; a deleted
    topic's publish is 404 and recreates none of its streams."""
    services.topic_create(tenant=acme.tenant, actor="test", name="events", partitions=2)
    services.subscription_create(tenant=acme.tenant, actor="test", name="billing", topic="events")
    topic = selectors.topic_document(selectors.topic_get(tenant=acme.tenant, name="events"))
    sub = selectors.subscription_document(
        selectors.subscription_get(tenant=acme.tenant, name="billing")
    )
    assert acme.client.delete("/v1/subscriptions/billing").status_code == 204
    stale(acme, "subscription", sub)

    pulled = post(acme.client, "/v1/subscriptions/billing/pull", {"max_messages": 10})

    assert_problem(pulled, 404, "not_found")
    assert keys_of(sub["id"]) == []
    assert len(keys_of(topic["id"])) == 2  # the two partition streams, untouched

    assert acme.client.delete("/v1/topics/events").status_code == 204
    stale(acme, "topic", topic)

    published = post(acme.client, "/v1/topics/events/messages", {"body": 1})

    assert_problem(published, 404, "not_found")
    assert keys_of(topic["id"]) == []


@pytest.mark.django_db(transaction=True)  # the waiting request's thread must see the rows
def test_a_long_poll_that_spans_the_delete_answers_404(acme: TenantCtx) -> None:
    """A pull waiting 10 s on a queue that is deleted meanwhile is woken by the deletion and
    answers 404 (not 500, and not after its full wait)."""
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            post(
                Client(HTTP_AUTHORIZATION=f"Bearer {acme.key}"),
                "/v1/queues/jobs/pull",
                {"wait_seconds": 10},
            )
        )
    )
    waiting.start()
    redis = get_redis()
    channel = queue_keys(str(acme.tenant.id), queue_doc(acme, "jobs")["id"])["channel"]
    deadline = time.monotonic() + 5
    while not redis.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
        time.sleep(0.01)  # until the long poll listens
    services.queue_delete(
        tenant=acme.tenant, actor="test", queue=selectors.queue_get(tenant=acme.tenant, name="jobs")
    )
    waiting.join(timeout=5)

    assert not waiting.is_alive()
    assert_problem(answers[0], 404, "not_found")


def test_structures_lost_by_redis_are_rebuilt_by_the_next_request(acme: TenantCtx) -> None:
    """After Redis lost a queue's stream (a restart without persistence), the next publish
    recreates it from PostgreSQL and succeeds, and the message can be pulled."""
    services.queue_create(tenant=acme.tenant, actor="test", name="jobs")
    doc = queue_doc(acme, "jobs")
    get_redis().flushdb()

    published = post(acme.client, "/v1/queues/jobs/messages", {"body": "again"})
    pulled = post(acme.client, "/v1/queues/jobs/pull", {})

    assert published.status_code == 201
    assert [m["body"] for m in pulled.json()["messages"]] == ["again"]
    assert get_redis().exists(queue_keys(str(acme.tenant.id), doc["id"])["stream"]) == 1
