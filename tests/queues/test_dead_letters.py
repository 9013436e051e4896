"""Dead letters one by one (queues.services.dead_letter_redrive / dead_letter_purge) and the
reads the console's workbench makes of a queue (queues.selectors.queue_browse,
queue_delayed, dead_letter_page, dead_letter_feeders)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from kernel.errors import InvalidRequest
from queues import messaging
from queues import selectors as queue_selectors
from queues import services as queue_services
from queues.models import Queue
from tenants.models import AuditEvent
from tenants.principals import Principal, authenticate
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic

ACTOR = "user:owner@acme.test"


def principal_of(ctx: TenantCtx) -> Principal:
    return authenticate(f"Bearer {ctx.key}")


def publish(ctx: TenantCtx, queue: str, message: dict[str, Any]) -> dict[str, Any]:
    principal = principal_of(ctx)
    doc = queue_selectors.resource_doc(principal.tenant_id, "queue", queue)
    (result,) = async_to_sync(messaging.publish)(principal, "queue", doc, message)
    return result


async def _pull_nack(principal: Principal, doc: dict[str, Any], count: int) -> list[Any]:
    got = await messaging.pull(principal, "queue", doc, count=count)
    if got:
        await messaging.settle(principal, "queue", doc, "nack", [m["ack_id"] for m in got])
    return got


def pull_and_nack(ctx: TenantCtx, queue: str, count: int = 10) -> list[dict[str, Any]]:
    principal = principal_of(ctx)
    doc = queue_selectors.resource_doc(principal.tenant_id, "queue", queue)
    return async_to_sync(_pull_nack)(principal, doc, count)


def queues(ctx: TenantCtx, *, max_attempts: int = 1) -> tuple[Queue, Queue]:
    dlq = make_queue(tenant=ctx.tenant, name="orders-dlq")
    orders = make_queue(
        tenant=ctx.tenant,
        name="orders",
        dead_letter_queue="orders-dlq",
        max_delivery_attempts=max_attempts,
    )
    return orders, dlq


def dead_letters(ctx: TenantCtx, n: int) -> tuple[Queue, Queue, list[str], list[str]]:
    """``n`` messages published to orders (bodies {"n": i}) and dead-lettered at their first
    delivery; returns the queues, the message ids and the dead letters' offsets."""
    orders, dlq = queues(ctx)
    ids = [
        publish(ctx, "orders", {"body": {"n": i}, "attributes": {"i": str(i)}})["id"]
        for i in range(n)
    ]
    assert len(pull_and_nack(ctx, "orders")) == n
    page = queue_selectors.dead_letter_page(dlq, limit=100)
    return orders, dlq, ids, [m["offset"] for m in page["messages"]]


def bodies(queue: Queue) -> list[Any]:
    return [m["body"] for m in queue_selectors.queue_browse(queue, limit=100)["messages"]]


def trail(ctx: TenantCtx) -> list[tuple[str, str, dict[str, Any]]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(actor=ACTOR)
        .order_by("id")
        .values_list("action", "target_id", "data")
    )


def test_a_message_past_max_delivery_attempts_is_listed_with_its_source_and_reason(
    acme: TenantCtx,
) -> None:
    """Delivered twice (max_delivery_attempts 2) and nacked each time, a message becomes a
    dead letter whose page row names its source queue, the reason, the attempts and its
    original id, with its own attributes apart from the op-* ones."""
    orders, dlq = queues(acme, max_attempts=2)
    sent = publish(acme, "orders", {"body": {"order": 7}, "attributes": {"color": "red"}})
    assert [m["delivery_attempt"] for m in pull_and_nack(acme, "orders")] == [1]
    assert queue_selectors.dead_letter_page(dlq, limit=10)["messages"] == []
    assert [m["delivery_attempt"] for m in pull_and_nack(acme, "orders")] == [2]

    page = queue_selectors.dead_letter_page(dlq, limit=10)
    (row,) = page["messages"]
    assert page["next"] is None
    assert (
        row["source"],
        row["reason"],
        row["attempts"],
        row["original_id"],
        row["body"],
        row["own_attributes"],
        row["state"],
    ) == (
        "queue:orders",
        "max_delivery_attempts",
        2,
        sent["id"],
        {"order": 7},
        {"color": "red"},
        "available",
    )
    assert bodies(orders) == []
    assert queue_selectors.dead_letter_feeders(dlq) == {"queues": ["orders"], "subscriptions": []}


def test_feeders_name_the_queues_and_subscriptions_that_dead_letter_into_a_queue(
    acme: TenantCtx,
) -> None:
    orders, dlq = queues(acme)
    make_queue(
        tenant=acme.tenant, name="billing", dead_letter_queue="orders-dlq", max_delivery_attempts=3
    )
    make_topic(tenant=acme.tenant)
    make_subscription(tenant=acme.tenant, dead_letter_queue="orders-dlq", max_delivery_attempts=3)
    assert queue_selectors.dead_letter_feeders(dlq) == {
        "queues": ["billing", "orders"],
        "subscriptions": ["audit"],
    }
    assert queue_selectors.dead_letter_feeders(orders) == {"queues": [], "subscriptions": []}


def test_redrive_selected_moves_exactly_those_to_their_source(acme: TenantCtx) -> None:
    """Two of three dead letters go back to orders without their op-* attributes; the third
    stays; one audit event names the ids."""
    orders, dlq, ids, offsets = dead_letters(acme, 3)
    result = queue_services.dead_letter_redrive(
        tenant=acme.tenant, actor=ACTOR, queue=dlq, ids=[offsets[0], offsets[2]], to=None
    )
    assert result == {"moved": 2, "skipped": 0}
    (left,) = queue_selectors.dead_letter_page(dlq, limit=10)["messages"]
    assert (left["offset"], left["body"], left["original_id"]) == (offsets[1], {"n": 1}, ids[1])
    moved = queue_selectors.queue_browse(orders, limit=10)["messages"]
    assert [(m["body"], m["attributes"], m["delivery_attempts"]) for m in moved] == [
        ({"n": 0}, {"i": "0"}, 0),
        ({"n": 2}, {"i": "2"}, 0),
    ]
    assert trail(acme) == [
        (
            "queue.redrive",
            "orders-dlq",
            {"to": None, "ids": [offsets[0], offsets[2]], "moved": 2, "skipped": 0},
        )
    ]


def test_redrive_selected_to_another_queue(acme: TenantCtx) -> None:
    orders, dlq, _, offsets = dead_letters(acme, 2)
    other = make_queue(tenant=acme.tenant, name="replay")
    result = queue_services.dead_letter_redrive(
        tenant=acme.tenant, actor=ACTOR, queue=dlq, ids=[offsets[1]], to="replay"
    )
    assert result == {"moved": 1, "skipped": 0}
    assert bodies(other) == [{"n": 1}]
    assert bodies(orders) == []
    assert bodies(dlq) == [{"n": 0}]


def test_redrive_of_an_offset_no_longer_stored_skips_it(acme: TenantCtx) -> None:
    orders, dlq, _, offsets = dead_letters(acme, 1)
    result = queue_services.dead_letter_redrive(
        tenant=acme.tenant, actor=ACTOR, queue=dlq, ids=["1-0", offsets[0]], to=None
    )
    assert result == {"moved": 1, "skipped": 1}
    assert bodies(orders) == [{"n": 0}]


def test_purge_selected_removes_exactly_those(acme: TenantCtx) -> None:
    orders, dlq, _, offsets = dead_letters(acme, 3)
    purged = queue_services.dead_letter_purge(
        tenant=acme.tenant, actor=ACTOR, queue=dlq, ids=[offsets[1], offsets[1]]
    )
    assert purged == 1
    assert bodies(dlq) == [{"n": 0}, {"n": 2}]
    assert bodies(orders) == []
    assert trail(acme) == [("queue.purge", "orders-dlq", {"purged": 1, "ids": [offsets[1]]})]
    assert queue_selectors.quiet_stats(dlq)["available"] == 2


@pytest.mark.parametrize("ids", [[], ["not-an-offset"], ["1-0", "x"]])
def test_a_bad_choice_is_a_400_and_changes_nothing(acme: TenantCtx, ids: list[str]) -> None:
    _, dlq, _, _ = dead_letters(acme, 2)
    for call in (queue_services.dead_letter_purge, queue_services.dead_letter_redrive):
        extra = {"to": None} if call is queue_services.dead_letter_redrive else {}
        with pytest.raises(InvalidRequest) as caught:
            call(tenant=acme.tenant, actor=ACTOR, queue=dlq, ids=ids, **extra)  # type: ignore[operator]
        assert caught.value.errors[0]["field"] == "ids"
    assert bodies(dlq) == [{"n": 0}, {"n": 1}]
    assert trail(acme) == []


def test_browse_shows_state_lease_deadline_and_changes_nothing(acme: TenantCtx) -> None:
    """One message leased, one available: the page says which, with the lease's deadline;
    reading it twice leaves the stats and the next pull as they were."""
    orders = make_queue(tenant=acme.tenant, name="orders", visibility_timeout=60)
    publish(acme, "orders", {"body": "first"})
    publish(acme, "orders", {"body": "second"})
    principal = principal_of(acme)
    doc = queue_selectors.resource_doc(principal.tenant_id, "queue", "orders")
    (leased,) = async_to_sync(messaging.pull)(principal, "queue", doc, count=1)
    before = queue_selectors.quiet_stats(orders)

    for _ in range(2):
        page = queue_selectors.queue_browse(orders, limit=10)
    first, second = page["messages"]
    assert (first["body"], first["state"], first["delivery_attempts"]) == ("first", "in_flight", 1)
    assert first["lease_deadline_ms"] is not None
    assert first["lease_deadline_ms"] - int(leased["publish_time"].timestamp() * 1000) >= 60_000
    assert (second["body"], second["state"], second["delivery_attempts"]) == (
        "second",
        "available",
        0,
    )
    assert second["lease_deadline_ms"] is None

    assert (
        queue_selectors.quiet_stats(orders)
        == before
        == {
            "available": 1,
            "in_flight": 1,
            "delayed": 0,
            "oldest_age_seconds": before["oldest_age_seconds"],
        }
    )
    (nxt,) = async_to_sync(messaging.pull)(principal, "queue", doc, count=1)
    assert (queue_selectors.readable(nxt)["body"], nxt["delivery_attempt"]) == ("second", 1)


def test_delayed_messages_are_read_with_their_due_time(acme: TenantCtx) -> None:
    """A delayed message (here with a body long enough for a 16-bit msgpack length) is shown
    with its due time, its attributes and key, and stays delayed."""
    orders = make_queue(tenant=acme.tenant, name="orders")
    long_body = "x" * 300
    publish(
        acme,
        "orders",
        {"body": long_body, "attributes": {"a": "1"}, "key": "k", "delay_seconds": 90},
    )
    publish(acme, "orders", {"body_base64": "AAEC", "delay_seconds": 30})

    page = queue_selectors.queue_delayed(orders, limit=1)
    assert page["next"] == 1
    (soonest,) = page["messages"]
    assert (soonest["body_base64"], soonest["attributes"], soonest["state"]) == (
        "AAEC",
        {},
        "delayed",
    )
    (later,) = queue_selectors.queue_delayed(orders, limit=1, start=1)["messages"]
    assert (later["body"], later["attributes"], later["key"]) == (long_body, {"a": "1"}, "k")
    published_ms = int(later["publish_time"].timestamp() * 1000)
    assert later["due_ms"] == published_ms + 90_000
    assert queue_selectors.queue_delayed(orders, limit=5, start=2) == {"messages": [], "next": None}
    assert queue_selectors.queue_browse(orders, limit=10)["messages"] == []
    assert queue_selectors.quiet_stats(orders)["delayed"] == 2


def test_a_body_with_an_integer_beyond_64_bits_is_read_exactly(acme: TenantCtx) -> None:
    orders = make_queue(tenant=acme.tenant, name="orders")
    response = acme.client.post(
        "/v1/queues/orders/messages",
        data='{"body": {"big": 123456789012345678901234567890}}',
        content_type="application/json",
    )
    assert response.status_code == 201
    (message,) = queue_selectors.queue_browse(orders, limit=5)["messages"]
    assert message["body"] == {"big": 123456789012345678901234567890}
