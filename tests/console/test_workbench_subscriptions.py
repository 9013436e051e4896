"""The message workbench for a subscription: browsing, without side effects, what it
delivered and has not settled, what it delivers next from its position on and the topic's
delayed messages; receive-and-requeue for debugging; and the links from its page. Viewers
browse and cannot requeue; another tenant's subscription is a 404 and stays as it was."""

from __future__ import annotations

from typing import Any

from django.test import Client

from kernel.redis_client import get_redis
from kernel.redis_keys import tenant_scan_pattern, usage_key
from queues import selectors as queue_selectors
from queues.engine.dataplane import partition_for
from queues.engine.messages import now_ms
from queues.models import Queue, Subscription, Topic
from tenants.models import AuditEvent
from tests.engine import subscription_reader
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic
from tests.helpers import post_json

PAGE = "/subscriptions/audit/messages/"
REQUEUE = "/subscriptions/audit/messages/requeue/"


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


def publish(ctx: TenantCtx, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    response = post_json(ctx.client, "/v1/topics/events/messages", {"messages": list(messages)})
    assert response.status_code == 201, response.content
    published: list[dict[str, Any]] = response.json()["messages"]
    return published


def api_pull(ctx: TenantCtx, count: int) -> list[dict[str, Any]]:
    response = post_json(ctx.client, "/v1/subscriptions/audit/pull", {"max_messages": count})
    assert response.status_code == 200, response.content
    pulled: list[dict[str, Any]] = response.json()["messages"]
    return pulled


def by_offset(messages: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(partition, offset) of each message, in the order the page merges partitions."""
    return sorted(
        ((m["partition"], m["offset"]) for m in messages),
        key=lambda po: (tuple(int(x) for x in po[1].split("-")), po[0]),
    )


def counts(sub: Subscription) -> dict[str, int]:
    """The subscription's numbers but the oldest age, which grows while a test runs."""
    stats = queue_selectors.quiet_stats(sub)
    del stats["oldest_age_seconds"]
    return stats


def delivered_count(ctx: TenantCtx) -> int:
    """Deliveries counted in the tenant's usage, over every hour."""
    usage = get_redis().hgetall(usage_key(str(ctx.tenant.id)))
    return sum(int(v) for k, v in usage.items() if k.endswith(b":d"))


def audit_trail(ctx: TenantCtx) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant).order_by("id").values_list("action", "target_id")
    )


def events_and_audit(ctx: TenantCtx, **options: Any) -> Subscription:
    """Topic "events" (two partitions) and its subscription "audit" (``options``: its
    settings; visibility 60 s and a 10 to 60 s backoff unless told otherwise)."""
    make_topic(tenant=ctx.tenant, name="events", partitions=2)
    settings: dict[str, Any] = {
        "visibility_timeout": 60,
        "retry_backoff": {"min_seconds": 10, "max_seconds": 60},
        **options,
    }
    return make_subscription(tenant=ctx.tenant, name="audit", topic="events", **settings)


# --- browsing ---------------------------------------------------------------------------------


def test_browsing_shows_what_the_subscription_holds_and_changes_nothing(
    acme: TenantCtx, owner: Client
) -> None:
    """One message in flight, one nacked to wait 300 s, two unread on two partitions and one
    delayed: the page shows each where it is, the lease with its deadline and the retry
    with its due time. After browsing twice every key in Redis, the numbers and what the
    next API pull delivers are what they were."""
    sub = events_and_audit(acme)
    published = publish(
        acme,
        *({"body": {"n": i}, "key": key_on(i % 2), "attributes": {"i": str(i)}} for i in range(4)),
        {"body": "later", "key": key_on(0), "delay_seconds": 120},
    )
    started = now_ms()
    held, backing_off = api_pull(acme, 2)
    nack = post_json(
        acme.client,
        "/v1/subscriptions/audit/nack",
        {"ack_ids": [backing_off["ack_id"]], "delay_seconds": 300},
    )
    assert nack.json() == {"nacked": 1, "stale": []}
    ended = now_ms()
    # offsets are per partition: two partitions may hand out the same one
    delivered = {(m["partition"], m["offset"]) for m in (held, backing_off)}
    unread = [m for m in published[:4] if (m["partition"], m["offset"]) not in delivered]
    assert len(unread) == 2
    before = redis_state(acme)
    numbers = counts(sub)
    assert numbers == {"available": 2, "in_flight": 1, "delayed": 2}

    for _ in range(2):
        page = owner.get(PAGE)
    assert page.status_code == 200
    assert redis_state(acme) == before
    assert counts(sub) == numbers

    pending = page.context["pending_page"]["messages"]
    assert [(m["partition"], m["offset"]) for m in pending] == by_offset([held, backing_off])
    rows = {(m["partition"], m["offset"]): m for m in pending}
    in_flight = rows[held["partition"], held["offset"]]
    retry = rows[backing_off["partition"], backing_off["offset"]]
    reader = subscription_reader(acme, "audit")
    assert (in_flight["state"], in_flight["delivery_attempts"], in_flight["retry_due_ms"]) == (
        "in_flight",
        1,
        None,
    )
    assert in_flight["lease_deadline_ms"] == get_redis().zscore(
        reader.leases[held["partition"]], held["offset"]
    )
    assert started + 60_000 <= in_flight["lease_deadline_ms"] <= ended + 60_000
    assert (retry["state"], retry["delivery_attempts"], retry["lease_deadline_ms"]) == (
        "retry",
        1,
        None,
    )
    assert started + 300_000 <= retry["retry_due_ms"] <= ended + 300_000
    assert in_flight["body"] == {"n": int(in_flight["attributes"]["i"])}

    next_up = page.context["unread_page"]
    assert [(m["partition"], m["offset"]) for m in next_up["messages"]] == by_offset(unread)
    assert [(m["state"], m["delivery_attempts"]) for m in next_up["messages"]] == [
        ("available", 0)
    ] * 2
    assert (next_up["next"], next_up["skipped"]) == (None, 0)
    (later,) = page.context["delayed_page"]["messages"]
    assert (later["body"], later["offset"], later["partition"]) == ("later", None, 0)
    delivered_on = [sum(m["partition"] == p for m in (held, backing_off)) for p in (0, 1)]
    assert [(g["partition"], g["pending"], g["lag"]) for g in page.context["partitions"]] == [
        (0, delivered_on[0], 2 - delivered_on[0]),
        (1, delivered_on[1], 2 - delivered_on[1]),
    ]
    html = page.content.decode()
    assert "lease until" in html
    assert "again from" in html
    assert "Next to deliver" in html
    assert f"{later['due']:%Y-%m-%d %H:%M:%S} UTC" in html
    assert "Receive and requeue" in html

    after = api_pull(acme, 10)
    assert by_offset(after) == by_offset(unread)
    assert [m["delivery_attempt"] for m in after] == [1, 1]


def test_the_lists_page_through_partitions_with_the_cursors_they_hand_out(
    acme: TenantCtx, owner: Client
) -> None:
    """Five unread messages on two partitions, two a page: following the next links shows
    each once, in offset order (then by partition: offsets of two partitions may tie); so do
    the delivered ones, and the delayed ones soonest due first."""
    events_and_audit(acme)
    published = publish(acme, *({"body": i, "key": key_on(i % 2)} for i in range(5)))
    seen: list[dict[str, Any]] = []
    query = "?limit=2"
    while True:
        page = owner.get(PAGE + query).context["unread_page"]
        seen += page["messages"]
        if page["next"] is None:
            break
        assert page["next"].count(",") == 1
        query = f"?limit=2&after={page['next']}"
    assert [(m["partition"], m["offset"]) for m in seen] == by_offset(published)
    assert sorted(m["body"] for m in seen) == [0, 1, 2, 3, 4]

    api_pull(acme, 5)
    held: list[dict[str, Any]] = []
    query = "?limit=2"
    while True:
        page = owner.get(PAGE + query).context["pending_page"]
        held += page["messages"]
        if page["next"] is None:
            break
        query = f"?limit=2&pending={page['next']}"
    assert [(m["partition"], m["offset"]) for m in held] == by_offset(published)
    assert owner.get(PAGE).context["unread_page"]["messages"] == []

    publish(acme, *({"body": i, "key": key_on(i % 2), "delay_seconds": 60 + i} for i in range(3)))
    first = owner.get(PAGE + "?limit=2").context["delayed_page"]
    rest = owner.get(PAGE + f"?limit=2&delayed={first['next']}").context["delayed_page"]
    assert [m["body"] for m in first["messages"] + rest["messages"]] == [0, 1, 2]
    assert rest["next"] is None


def test_a_filtered_subscription_shows_only_what_it_delivers(
    acme: TenantCtx, owner: Client
) -> None:
    """Messages the filter skips are left out of the unread and the delayed lists, and the
    page says how many it read past."""
    events_and_audit(acme, filter={"attributes": {"color": "red"}})
    publish(
        acme,
        {"body": 1, "key": key_on(0), "attributes": {"color": "red"}},
        {"body": 2, "key": key_on(0), "attributes": {"color": "blue"}},
        {"body": 3, "key": key_on(1)},
        {"body": 4, "key": key_on(1), "attributes": {"color": "red", "size": "L"}},
        {"body": 5, "key": key_on(0), "delay_seconds": 60},
        {"body": 6, "key": key_on(1), "delay_seconds": 60, "attributes": {"color": "red"}},
    )
    page = owner.get(PAGE)
    unread = page.context["unread_page"]
    assert sorted(m["body"] for m in unread["messages"]) == [1, 4]
    assert unread["skipped"] == 2
    assert [m["body"] for m in page.context["delayed_page"]["messages"]] == [6]
    html = page.content.decode()
    assert "2 messages the filter skips are left out of this page." in html
    assert "<code>color=red</code>" in html
    assert sorted(m["body"] for m in api_pull(acme, 10)) == [1, 4]


def test_a_cursor_the_page_did_not_hand_out_is_an_error_and_reads_nothing(
    acme: TenantCtx, owner: Client
) -> None:
    sub = events_and_audit(acme)
    publish(acme, {"body": 1})
    before = redis_state(acme)
    cases = {
        "?after=nope": "after: not a position in this subscription's 2 partitions.",
        "?after=1-0": "after: not a position in this subscription's 2 partitions.",
        "?pending=1-0,x": "pending: not a position in this subscription's 2 partitions.",
        "?delayed=1,-1": "delayed: not a position in this subscription's 2 partitions.",
    }
    for query, error in cases.items():
        page = owner.get(PAGE + query)
        assert page.status_code == 200
        assert page.context["error"] == error, query
        assert "unread_page" not in page.context
        assert "Start from the beginning" in page.content.decode()
    assert redis_state(acme) == before
    assert counts(sub) == {"available": 1, "in_flight": 0, "delayed": 0}


def test_the_page_says_when_the_message_store_is_unreachable(
    acme: TenantCtx, owner: Client, redis_down: str
) -> None:
    # Rows made directly: creating them through the services needs Redis.
    topic = Topic.all_tenants.create(tenant=acme.tenant, name="events", partitions=2)
    Subscription.all_tenants.create(tenant=acme.tenant, name="audit", topic=topic)
    page = owner.get(PAGE)
    assert page.status_code == 200
    assert page.context["store_down"] is True
    assert "The message store is unreachable" in page.content.decode()


# --- receive and requeue ----------------------------------------------------------------------


def test_receive_and_requeue_shows_what_was_received_and_counts_the_attempt(
    acme: TenantCtx, owner: Client
) -> None:
    """Each requeue delivers the message once more and gives it back at once: available
    again, with one attempt more, the delivery counted in usage, nothing in the audit trail
    (as for a queue: it is a pull, not a change of the subscription)."""
    sub = events_and_audit(acme)
    (sent,) = publish(acme, {"body": {"a": 1}, "attributes": {"k": "v"}})
    trail = audit_trail(acme)

    first = owner.post(REQUEUE, {"count": 5})
    assert first.status_code == 200
    (got,) = first.context["received"]
    assert (got["body"], got["attributes"], got["delivery_attempt"]) == ({"a": 1}, {"k": "v"}, 1)
    assert (got["partition"], got["offset"]) == (sent["partition"], sent["offset"])
    html = first.content.decode()
    assert "delivery attempts went up by one" in html
    assert 'href="/subscriptions/audit/messages/"' in html
    (message,) = owner.get(PAGE).context["pending_page"]["messages"]
    assert (message["offset"], message["state"], message["delivery_attempts"]) == (
        sent["offset"],
        "retry",
        1,
    )
    assert message["retry_due_ms"] <= now_ms()
    assert counts(sub) == {"available": 1, "in_flight": 0, "delayed": 0}

    second = owner.post(REQUEUE, {"count": 1})
    assert [m["delivery_attempt"] for m in second.context["received"]] == [2]
    (message,) = owner.get(PAGE).context["pending_page"]["messages"]
    assert message["delivery_attempts"] == 2
    assert counts(sub) == {"available": 1, "in_flight": 0, "delayed": 0}
    assert delivered_count(acme) == 2
    assert audit_trail(acme) == trail
    (pulled,) = api_pull(acme, 10)
    assert (pulled["offset"], pulled["delivery_attempt"]) == (sent["offset"], 3)


def test_requeue_is_recorded_as_the_queue_version_records_it(
    acme: TenantCtx, owner: Client
) -> None:
    """A queue's requeue and a subscription's leave the same trace: one delivery each in
    usage and no audit event."""
    make_queue(tenant=acme.tenant, name="orders")
    events_and_audit(acme)
    post_json(acme.client, "/v1/queues/orders/messages", {"body": 1})
    publish(acme, {"body": 1})
    trail = audit_trail(acme)
    assert owner.post("/queues/orders/messages/requeue/", {"count": 1}).status_code == 200
    assert (delivered_count(acme), audit_trail(acme)) == (1, trail)
    assert owner.post(REQUEUE, {"count": 1}).status_code == 200
    assert (delivered_count(acme), audit_trail(acme)) == (2, trail)


def test_requeue_on_the_last_attempt_dead_letters_the_message(
    acme: TenantCtx, owner: Client
) -> None:
    make_queue(tenant=acme.tenant, name="audit-dlq")
    sub = events_and_audit(acme, max_delivery_attempts=1, dead_letter_queue="audit-dlq")
    (sent,) = publish(acme, {"body": "poison"})
    response = owner.post(REQUEUE, {"count": 1})
    assert [m["delivery_attempt"] for m in response.context["received"]] == [1]
    page = owner.get(PAGE).context
    assert page["pending_page"]["messages"] == []
    assert page["unread_page"]["messages"] == []
    assert counts(sub) == {"available": 0, "in_flight": 0, "delayed": 0}
    dlq = Queue.objects.for_tenant(acme.tenant).get(name="audit-dlq")
    (dead,) = queue_selectors.dead_letter_page(dlq, limit=10)["messages"]
    assert (dead["body"], dead["source"], dead["attempts"], dead["original_id"]) == (
        "poison",
        "subscription:audit",
        1,
        sent["id"],
    )


def test_requeue_with_nothing_available_or_a_bad_count_changes_nothing(
    acme: TenantCtx, owner: Client
) -> None:
    events_and_audit(acme)
    empty = owner.post(REQUEUE, {"count": 3})
    assert empty.status_code == 200
    assert empty.context["received"] == []
    assert "No message was available." in empty.content.decode()

    publish(acme, {"body": 1})
    before = redis_state(acme)
    for count in ("0", "11", "x"):
        response = owner.post(REQUEUE, {"count": count}, follow=True)
        assert response.redirect_chain == [(PAGE, 302)]
        assert "Receive 1 to 10 messages at a time." in response.content.decode()
    assert redis_state(acme) == before


def test_a_viewer_browses_but_cannot_requeue(
    acme: TenantCtx, owner: Client, viewer: Client
) -> None:
    sub = events_and_audit(acme)
    publish(acme, {"body": 1})
    before = redis_state(acme)
    page = viewer.get(PAGE)
    assert page.status_code == 200
    assert [m["body"] for m in page.context["unread_page"]["messages"]] == [1]
    html = page.content.decode()
    assert "Receive and requeue" not in html
    assert REQUEUE not in html
    assert viewer.post(REQUEUE, {"count": 1}).status_code == 403
    assert viewer.get(REQUEUE).status_code == 403
    assert redis_state(acme) == before
    assert counts(sub) == {"available": 1, "in_flight": 0, "delayed": 0}
    assert delivered_count(acme) == 0


def test_another_tenants_subscription_is_a_404_and_stays_as_it_was(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    events_and_audit(globex)
    publish(globex, {"body": "theirs"})
    before = redis_state(globex)
    assert owner.get(PAGE).status_code == 404
    assert owner.get(PAGE + "?after=0-0,0-0&pending=0-0,0-0&delayed=0,0").status_code == 404
    assert owner.post(REQUEUE, {"count": 1}).status_code == 404
    assert redis_state(globex) == before
    assert delivered_count(globex) == 0
    (theirs,) = api_pull(globex, 10)
    assert theirs["delivery_attempt"] == 1


# --- links ------------------------------------------------------------------------------------


def test_the_subscription_page_links_to_browsing_and_requeue(
    acme: TenantCtx, owner: Client, viewer: Client
) -> None:
    events_and_audit(acme)
    html = owner.get("/subscriptions/audit/").content.decode()
    assert f'href="{PAGE}">Browse messages</a>' in html
    assert f'href="{PAGE}#requeue">Receive and requeue</a>' in html
    seen = viewer.get("/subscriptions/audit/").content.decode()
    assert f'href="{PAGE}">Browse messages</a>' in seen
    assert "Receive and requeue" not in seen
    page = owner.get(PAGE).content.decode()
    assert 'href="/subscriptions/audit/">Subscription' in page
    assert 'id="requeue"' in page
