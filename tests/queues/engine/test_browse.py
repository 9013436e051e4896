"""Reading a subscription's messages without touching them (queues/engine/browse.py): its
group on each partition, what it delivered and has not settled, what it delivers next from
its position on, and the topic's delayed messages; across partitions in one order, with
cursors that page through them; a filter applied as a pull applies it; and nothing in Redis
changes, not even due work."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.redis_client import get_redis
from kernel.redis_keys import tenant_scan_pattern
from queues.engine import browse
from queues.engine.dataplane import partition_for
from queues.engine.messages import now_ms
from queues.engine.targets import Consumer
from tests.engine import ack, bodies, publish_to_topic, pull, settle, subscription_reader
from tests.factories import TenantCtx, make_subscription, make_topic

T0 = 1_800_000_000_000  # a fixed clock, in ms, for leases, backoffs and delays


def key_on(partition: int, partitions: int = 2) -> str:
    """A message key that lands on ``partition``."""
    return next(
        k for k in (f"k{i}" for i in range(1000)) if partition_for(k, partitions) == partition
    )


def redis_state(ctx: TenantCtx) -> dict[bytes, bytes | None]:
    """Every lasting message-data key of the tenant with its serialized value (DUMP: entries,
    consumer groups with their pending entries and delivery times, sorted sets with their
    scores, the usage counters). Keys with a time to live (publish-rate counters, dedup ids)
    are left out: they vanish on their own while a test runs."""
    client = get_redis()
    keys = sorted(client.scan_iter(tenant_scan_pattern(str(ctx.tenant.id))))
    return {k: client.dump(k) for k in keys if client.pttl(k) == -1}


def positions_of(c: Consumer) -> list[str | None]:
    return [g.position for g in browse.group_positions(get_redis(), c)]


def unread_of(c: Consumer, limit: int = 100, after: list[str] | None = None) -> browse.Page:
    return browse.unread(get_redis(), c, positions=positions_of(c), after=after, limit=limit)


def sent_order(published: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(partition, offset) of published messages in the order the readers merge partitions:
    by offset, then by partition."""
    return sorted(
        ((r["partition"], r["offset"]) for r in published),
        key=lambda po: (browse.id_order(po[1]), po[0]),
    )


@pytest.fixture
def events(acme: TenantCtx) -> Consumer:
    """Topic "events" with two partitions and its subscription "audit" (visibility 30 s,
    backoff 10 to 60 s), as the engine reads it."""
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_subscription(
        tenant=acme.tenant,
        name="audit",
        topic="events",
        visibility_timeout=30,
        retry_backoff={"min_seconds": 10, "max_seconds": 60},
    )
    return subscription_reader(acme, "audit")


def test_group_positions_name_the_last_offset_read_pending_and_lag(
    acme: TenantCtx, events: Consumer
) -> None:
    """Each partition's group: the offset it last read, what it holds unsettled and what
    follows; a group Redis lost shows as position None."""
    published = publish_to_topic(
        acme,
        "events",
        *({"body": i, "key": key_on(0)} for i in range(3)),
        {"body": 3, "key": key_on(1)},
    )
    delivered = pull(events, 10, now=T0)
    assert ack(events, [m for m in delivered if bodies([m]) == [0]]) == 1
    publish_to_topic(acme, "events", {"body": 4, "key": key_on(0)}, {"body": 5, "key": key_on(1)})
    groups = browse.group_positions(get_redis(), events)
    assert groups == [
        browse.GroupPosition(0, published[2]["offset"], 2, 1),
        browse.GroupPosition(1, published[3]["offset"], 1, 1),
    ]

    get_redis().xgroup_destroy(events.streams[1], events.group)
    assert browse.group_positions(get_redis(), events)[1] == browse.GroupPosition(1, None, 0, None)
    assert bodies(unread_of(events).messages) == [4]


def test_unread_merges_partitions_in_offset_order_and_pages_without_repeats(
    acme: TenantCtx, events: Consumer
) -> None:
    """Five unread messages on two partitions, two a page: every message once, in offset
    order across partitions, each with 0 attempts; the last page has no next cursor."""
    published = publish_to_topic(
        acme, "events", *({"body": i, "key": key_on(i % 2)} for i in range(5))
    )
    seen: list[tuple[int, str]] = []
    after = None
    pages = 0
    while True:
        page = unread_of(events, limit=2, after=after)
        pages += 1
        assert len(page.messages) <= 2
        assert {(m["state"], m["delivery_attempts"]) for m in page.messages} <= {("available", 0)}
        seen += [(m["partition"], m["offset"]) for m in page.messages]
        if page.next is None:
            break
        assert len(page.next) == 2
        after = page.next
    assert seen == sent_order(published)
    assert pages == 3
    assert page.skipped == 0


def test_unread_starts_at_the_position_and_a_cursor_behind_it_does_not_go_back(
    acme: TenantCtx, events: Consumer
) -> None:
    """After a pull read two messages, the unread ones are those after them, also when an
    older cursor (here: the start of both partitions) is given."""
    published = publish_to_topic(acme, "events", *({"body": i, "key": key_on(0)} for i in range(4)))
    pull(events, 2, now=T0)
    expected = [(0, r["offset"]) for r in published[2:]]
    assert [(m["partition"], m["offset"]) for m in unread_of(events).messages] == expected
    old = unread_of(events, after=["0-0", "0-0"])
    assert [(m["partition"], m["offset"]) for m in old.messages] == expected


def test_unread_applies_the_filter_and_reads_past_long_runs_of_skipped_entries(
    acme: TenantCtx,
) -> None:
    """Only messages the filter lets through are shown, the others counted as skipped. A
    page reads several rounds to fill itself; past that it hands out a cursor that moves
    on, so a match behind more skipped entries than a page reads is found on the next."""
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(
        tenant=acme.tenant, name="red", topic="events", filter={"attributes": {"color": "red"}}
    )
    red = subscription_reader(acme, "red")
    blue = {"body": "blue", "attributes": {"color": "blue"}}
    publish_to_topic(acme, "events", {"body": 1, "attributes": {"color": "red"}}, blue)
    for _ in range(6):  # 600 skipped entries, more than one page's 10 rounds of 50 read
        publish_to_topic(acme, "events", *([blue] * 100))
    last = publish_to_topic(acme, "events", {"body": 2, "attributes": {"color": "red", "n": "1"}})

    first = unread_of(red, limit=5)
    assert bodies(first.messages) == [1]
    assert first.skipped == browse.FILTERED_SCAN * browse.FILTERED_ROUNDS - 1
    assert first.next is not None
    second = unread_of(red, limit=5, after=first.next)
    assert bodies(second.messages) == [2]
    assert second.messages[0]["offset"] == last[0]["offset"]
    assert second.skipped == 601 - first.skipped
    assert second.next is None
    # what pulls deliver is exactly that, and a pull too reads a bounded run per call
    assert [bodies(pull(red, 10)) for _ in range(2)] == [[1], [2]]


def test_pending_shows_leases_with_deadlines_and_retries_with_due_times(
    acme: TenantCtx, events: Consumer
) -> None:
    """A message in flight has its lease deadline; one nacked with a delay waits for its
    retry time; one redelivered after its lease ended counts two attempts."""
    published = publish_to_topic(acme, "events", *({"body": i, "key": key_on(0)} for i in range(3)))
    one, two, three = pull(events, 3, now=T0)
    assert settle(events, "nack", [two["ack_id"]], ms=5000, now=T0 + 1000) == (1, [])
    assert settle(events, "ack", [three["ack_id"]], now=T0 + 1000) == (1, [])
    # one's lease ended at T0 + 30 s; with its 10 s backoff over, it is delivered again
    (again,) = pull(events, 1, now=T0 + 40_000)
    assert (again["offset"], again["delivery_attempt"]) == (one["offset"], 2)

    page = browse.pending(get_redis(), events, limit=10)
    rows = [
        (m["offset"], m["state"], m["delivery_attempts"], m["lease_deadline_ms"], m["retry_due_ms"])
        for m in page.messages
    ]
    assert rows == [
        (published[0]["offset"], "in_flight", 2, T0 + 40_000 + 30_000, None),
        (published[1]["offset"], "retry", 1, None, T0 + 6000),
    ]
    assert bodies(page.messages) == [0, 1]
    assert page.next is None


def test_pending_pages_across_partitions(acme: TenantCtx, events: Consumer) -> None:
    published = publish_to_topic(
        acme, "events", *({"body": i, "key": key_on(i % 2)} for i in range(5))
    )
    pull(events, 5, now=T0)
    first = browse.pending(get_redis(), events, limit=3)
    assert first.next is not None
    rest = browse.pending(get_redis(), events, after=first.next, limit=3)
    assert rest.next is None
    seen = [(m["partition"], m["offset"]) for m in first.messages + rest.messages]
    assert seen == sent_order(published)


def test_a_message_read_ahead_and_handed_back_is_pending_with_no_attempt(
    acme: TenantCtx,
) -> None:
    """A filtered pull reads ahead; the matching entries it did not deliver go back
    undelivered: pending, due at once, 0 attempts, and then delivered as attempt 1."""
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(
        tenant=acme.tenant, name="red", topic="events", filter={"attributes": {"color": "red"}}
    )
    red = subscription_reader(acme, "red")
    publish_to_topic(
        acme, "events", *({"body": i, "attributes": {"color": "red"}} for i in range(2))
    )
    (leased,) = pull(red, 1, now=T0)
    delivered, handed_back = browse.pending(get_redis(), red, limit=10).messages
    assert (delivered["offset"], delivered["delivery_attempts"]) == (leased["offset"], 1)
    assert (handed_back["state"], handed_back["delivery_attempts"]) == ("retry", 0)
    assert handed_back["retry_due_ms"] == T0
    assert unread_of(red).messages == []
    assert [m["delivery_attempt"] for m in pull(red, 1, now=T0)] == [1]


def test_delayed_lists_the_topics_delayed_messages_soonest_first_through_the_filter(
    acme: TenantCtx,
) -> None:
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_subscription(
        tenant=acme.tenant, name="red", topic="events", filter={"attributes": {"color": "red"}}
    )
    red = subscription_reader(acme, "red")
    messages = [
        {"body": "p1-60", "key": key_on(1), "delay_seconds": 60},
        {"body": "p0-30", "key": key_on(0), "delay_seconds": 30},
        {"body": "p0-90", "key": key_on(0), "delay_seconds": 90},
        {"body": "blue", "key": key_on(1), "delay_seconds": 10, "attributes": {"color": "blue"}},
        {"body": "p1-120", "key": key_on(1), "delay_seconds": 120},
    ]
    for m in messages:
        m.setdefault("attributes", {"color": "red"})
    publish_to_topic(acme, "events", *messages, now=T0)

    first = browse.delayed(get_redis(), red, limit=2)
    assert bodies(first.messages) == ["p0-30", "p1-60"]
    assert [(m["partition"], m["due_ms"]) for m in first.messages] == [
        (0, T0 + 30_000),
        (1, T0 + 60_000),
    ]
    assert {(m["offset"], m["state"]) for m in first.messages} == {(None, "delayed")}
    assert first.skipped == 1
    assert first.next is not None
    rest = browse.delayed(get_redis(), red, after=first.next, limit=2)
    assert bodies(rest.messages) == ["p0-90", "p1-120"]
    assert rest.next is None


def test_reading_changes_nothing_in_redis_not_even_due_work(
    acme: TenantCtx, events: Consumer
) -> None:
    """With a lease that ended and a delay that is due (work a pull or beat would do first),
    every reader leaves every key of the tenant exactly as it was."""
    past = now_ms() - 120_000
    publish_to_topic(acme, "events", *({"body": i, "key": key_on(i % 2)} for i in range(4)))
    publish_to_topic(acme, "events", {"body": "due", "delay_seconds": 1}, now=past)
    pull(events, 2, now=past)  # their leases ended 90 s ago
    client = get_redis()
    groups = browse.group_positions(client, events)
    before = redis_state(acme)

    page = browse.unread(client, events, positions=[g.position for g in groups], limit=1)
    assert len(page.messages) == 1
    assert len(browse.pending(client, events, limit=1).messages) == 1
    assert bodies(browse.delayed(client, events, limit=1).messages) == ["due"]
    assert redis_state(acme) == before
    assert browse.group_positions(client, events) == groups
    assert sum(g.pending for g in groups) == 2
