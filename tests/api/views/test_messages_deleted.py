"""The data plane on deleted resources: a web process acting on a cached copy of a queue,
topic or subscription that was deleted stores nothing, leases nothing and recreates no Redis
key; its request answers 404, or reaches the resource that took the name since. After Redis
lost a resource's structures, the next request rebuilds them from PostgreSQL. (The engine's
own refusal, Gone, is tested in tests/queues/engine/test_dataplane.py.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kernel.redis_client import get_redis
from queues import selectors, services
from queues.engine.targets import queue_keys
from tests.engine import redis_keys_of
from tests.factories import TenantCtx, api_client, make_queue, make_subscription, make_topic
from tests.helpers import assert_problem, post_json

pytestmark = pytest.mark.django_db


def stale(ctx: TenantCtx, kind: str, doc: dict[str, Any]) -> None:
    """Make this process trust ``doc`` again, as another web process whose copy has not
    expired yet would."""
    ident = selectors.resource_ident(str(ctx.tenant.id), kind, doc["name"])
    selectors.resource_cache._local[ident] = (time.monotonic() + 60, doc)


def queue_doc(ctx: TenantCtx, name: str) -> dict[str, Any]:
    return selectors.queue_document(selectors.queue_get(tenant=ctx.tenant, name=name))


# --- over HTTP ----------------------------------------------------------------------------------


def test_publish_with_a_stale_copy_of_a_deleted_queue_is_404(acme: TenantCtx) -> None:
    """A web process that still trusts its copy of a deleted queue answers 404 to a publish
    and a pull, stores nothing and recreates none of the queue's keys."""
    make_queue(tenant=acme.tenant, name="jobs")
    doc = queue_doc(acme, "jobs")
    assert post_json(acme.client, "/v1/queues/jobs/messages", {"body": 1}).status_code == 201
    assert acme.client.delete("/v1/queues/jobs").status_code == 204
    stale(acme, "queue", doc)

    published = post_json(acme.client, "/v1/queues/jobs/messages", {"body": 2, "delay_seconds": 5})
    stale(acme, "queue", doc)
    pulled = post_json(acme.client, "/v1/queues/jobs/pull", {"max_messages": 10})
    stale(acme, "queue", doc)
    acked = post_json(acme.client, "/v1/queues/jobs/ack", {"ack_ids": ["0.1-0.1"]})

    for response in (published, pulled, acked):
        assert_problem(response, 404, "not_found")
    assert redis_keys_of(doc["id"]) == []


def test_publish_with_a_stale_copy_reaches_the_queue_that_took_the_name(
    acme: TenantCtx,
) -> None:
    """Deleted and created again under the same name: a publish through a stale copy of the
    old queue lands in the new one (and is delivered from it); the old one gets no key."""
    make_queue(tenant=acme.tenant, name="jobs")
    old = queue_doc(acme, "jobs")
    assert acme.client.delete("/v1/queues/jobs").status_code == 204
    make_queue(tenant=acme.tenant, name="jobs")
    new = queue_doc(acme, "jobs")
    stale(acme, "queue", old)

    published = post_json(acme.client, "/v1/queues/jobs/messages", {"body": "after"})
    stale(acme, "queue", old)
    pulled = post_json(acme.client, "/v1/queues/jobs/pull", {"max_messages": 10})

    assert published.status_code == 201
    (item,) = published.json()["messages"]
    assert [m["id"] for m in pulled.json()["messages"]] == [item["id"]]
    assert redis_keys_of(old["id"]) == []
    assert new["id"] != old["id"]


def test_topic_and_subscription_deleted_under_a_stale_copy(acme: TenantCtx) -> None:
    """A deleted subscription's pull is 404 and leaves its topic's streams alone; a deleted
    topic's publish is 404 and recreates none of its streams."""
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_subscription(tenant=acme.tenant, name="billing", topic="events")
    topic = selectors.topic_document(selectors.topic_get(tenant=acme.tenant, name="events"))
    sub = selectors.subscription_document(
        selectors.subscription_get(tenant=acme.tenant, name="billing")
    )
    assert acme.client.delete("/v1/subscriptions/billing").status_code == 204
    stale(acme, "subscription", sub)

    pulled = post_json(acme.client, "/v1/subscriptions/billing/pull", {"max_messages": 10})

    assert_problem(pulled, 404, "not_found")
    assert redis_keys_of(sub["id"]) == []
    assert len(redis_keys_of(topic["id"])) == 2  # the two partition streams, untouched

    assert acme.client.delete("/v1/topics/events").status_code == 204
    stale(acme, "topic", topic)

    published = post_json(acme.client, "/v1/topics/events/messages", {"body": 1})

    assert_problem(published, 404, "not_found")
    assert redis_keys_of(topic["id"]) == []


@pytest.mark.django_db(transaction=True)  # the waiting request's thread must see the rows
def test_a_long_poll_that_spans_the_delete_answers_404(acme: TenantCtx) -> None:
    """A pull waiting 10 s on a queue that is deleted meanwhile is woken by the deletion and
    answers 404 (not 500, and not after its full wait)."""
    make_queue(tenant=acme.tenant, name="jobs")
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            post_json(api_client(acme.key), "/v1/queues/jobs/pull", {"wait_seconds": 10})
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
    make_queue(tenant=acme.tenant, name="jobs")
    doc = queue_doc(acme, "jobs")
    get_redis().flushdb()

    published = post_json(acme.client, "/v1/queues/jobs/messages", {"body": "again"})
    pulled = post_json(acme.client, "/v1/queues/jobs/pull", {})

    assert published.status_code == 201
    assert [m["body"] for m in pulled.json()["messages"]] == ["again"]
    assert get_redis().exists(queue_keys(str(acme.tenant.id), doc["id"])["stream"]) == 1
