"""The message workbench in the console: send a test message, browse a queue without side
effects, receive-and-requeue, a topic's log, seeking a subscription, and the dead-letter
page with its confirmed redrive and purge. Viewers see and cannot act; another tenant's
resources are 404s."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.test import Client

from kernel.redis_client import get_redis
from kernel.redis_keys import usage_key
from queues import selectors as queue_selectors
from queues.models import Queue
from tenants.models import AuditEvent
from tests.factories import TenantCtx, make_queue, make_subscription, make_topic, signed_in
from tests.helpers import post_json

ACTOR = "user:owner@acme.test"


def trail(ctx: TenantCtx) -> list[tuple[str, str, dict[str, Any]]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(actor=ACTOR)
        .order_by("id")
        .values_list("action", "target_id", "data")
    )


def send(client: Client, path: str, **fields: Any) -> Any:
    data = {"body_format": "json", "body": "{}", "attributes": "", "key": "", "delay_seconds": ""}
    return client.post(path, {**data, **fields})


def stored(queue: Queue) -> list[dict[str, Any]]:
    return queue_selectors.queue_browse(queue, limit=100)["messages"]


def published_this_month(ctx: TenantCtx) -> int:
    usage = get_redis().hgetall(usage_key(str(ctx.tenant.id)))
    return sum(int(v) for k, v in usage.items() if k.startswith(b"m") and k.endswith(b":p"))


def dead_letters_of(ctx: TenantCtx, owner: Client, n: int) -> tuple[Queue, Queue, list[str]]:
    """orders (max_delivery_attempts 1) dead-letters into orders-dlq; ``n`` messages sent from
    the console and requeued once each land there. Returns both queues and the offsets."""
    dlq = make_queue(tenant=ctx.tenant, name="orders-dlq")
    orders = make_queue(
        tenant=ctx.tenant, name="orders", dead_letter_queue="orders-dlq", max_delivery_attempts=1
    )
    for i in range(n):
        send(owner, "/queues/orders/messages/send/", body=f'{{"n": {i}}}')
    owner.post("/queues/orders/messages/requeue/", {"count": n})
    offsets = [m["offset"] for m in stored(dlq)]
    assert len(offsets) == n
    return orders, dlq, offsets


# --- send and browse ----------------------------------------------------------------------------


def test_a_sent_message_is_browsed_with_its_attributes_and_counts_like_an_api_publish(
    acme: TenantCtx, owner: Client
) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    assert owner.get("/queues/orders/messages/send/").status_code == 200
    response = send(
        owner,
        "/queues/orders/messages/send/",
        body='{"order": 7, "items": ["a"]}',
        attributes="color = red\n\nsize=L",
        key="customer-1",
    )
    assert response.status_code == 302
    assert response["Location"] == "/queues/orders/messages/"
    assert published_this_month(acme) == 1

    page = owner.get("/queues/orders/messages/")
    assert page.status_code == 200
    (message,) = page.context["page"]["messages"]
    assert (message["body"], message["attributes"], message["key"], message["state"]) == (
        {"order": 7, "items": ["a"]},
        {"color": "red", "size": "L"},
        "customer-1",
        "available",
    )
    assert message["delivery_attempts"] == 0
    html = page.content.decode()
    assert "color=red" in html
    assert "&quot;order&quot;: 7" in html

    post_json(acme.client, "/v1/queues/orders/messages", {"body": 1})
    assert published_this_month(acme) == 2
    assert len(stored(queue)) == 2


def test_a_text_body_is_stored_as_raw_bytes(acme: TenantCtx, owner: Client) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    send(owner, "/queues/orders/messages/send/", body_format="text", body="hello, world")
    (message,) = stored(queue)
    assert message["body_base64"] == "aGVsbG8sIHdvcmxk"
    page = owner.get("/queues/orders/messages/")
    assert "Binary body, 12 bytes" in page.content.decode()


def test_an_invalid_message_is_refused_by_the_data_plane_rules_and_nothing_is_stored(
    acme: TenantCtx, owner: Client
) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    reserved = send(owner, "/queues/orders/messages/send/", attributes="op-x=1")
    assert reserved.status_code == 200
    assert reserved.context["form"].errors == {
        "attributes": [
            "Message 0: Attribute names starting 'op-' are reserved. Nothing was published."
        ]
    }
    late = send(owner, "/queues/orders/messages/send/", delay_seconds="901")
    assert late.context["form"].errors == {
        "delay_seconds": [
            "Message 0: delay_seconds must be an integer from 0 to 900. Nothing was published."
        ]
    }
    not_json = send(owner, "/queues/orders/messages/send/", body="{oops")
    assert not_json.context["form"].errors["body"][0].startswith("Not valid JSON")
    assert stored(queue) == []
    assert published_this_month(acme) == 0


def test_a_delayed_message_is_shown_with_its_due_time(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    send(owner, "/queues/orders/messages/send/", body='"later"', delay_seconds="120")
    page = owner.get("/queues/orders/messages/")
    assert page.context["page"]["messages"] == []
    (message,) = page.context["delayed"]["messages"]
    assert message["body"] == "later"
    assert message["due"] - message["publish_time"] == timedelta(seconds=120)
    assert f"{message['due']:%Y-%m-%d %H:%M:%S} UTC" in page.content.decode()


def test_browsing_changes_nothing(acme: TenantCtx, owner: Client) -> None:
    """A leased, an available and a delayed message: the page shows each with its state (the
    lease with its deadline), and after browsing twice the stats and the next pull are what
    they were."""
    queue = make_queue(tenant=acme.tenant, name="orders", visibility_timeout=60)
    for body in ('"one"', '"two"'):
        send(owner, "/queues/orders/messages/send/", body=body)
    send(owner, "/queues/orders/messages/send/", body='"three"', delay_seconds="300")
    pulled = post_json(acme.client, "/v1/queues/orders/pull", {"max_messages": 1}).json()
    assert [m["body"] for m in pulled["messages"]] == ["one"]
    before = queue_selectors.live_stats([queue])

    for _ in range(2):
        page = owner.get("/queues/orders/messages/")
    one, two = page.context["page"]["messages"]
    assert (one["state"], one["delivery_attempts"], two["state"]) == ("in_flight", 1, "available")
    assert one["lease_deadline"] > one["publish_time"]
    assert two["lease_deadline"] is None
    assert "lease until" in page.content.decode()
    assert [m["body"] for m in page.context["delayed"]["messages"]] == ["three"]

    assert queue_selectors.live_stats([queue]) == before
    assert before[0] | {"oldest_age_seconds": 0} == {
        "available": 1,
        "in_flight": 1,
        "delayed": 1,
        "oldest_age_seconds": 0,
    }
    after = post_json(acme.client, "/v1/queues/orders/pull", {"max_messages": 5}).json()
    assert [(m["body"], m["delivery_attempt"]) for m in after["messages"]] == [("two", 1)]


def test_browse_pages_by_offset(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    for i in range(3):
        send(owner, "/queues/orders/messages/send/", body=str(i))
    first = owner.get("/queues/orders/messages/?limit=2").context["page"]
    assert [m["body"] for m in first["messages"]] == [0, 1]
    rest = owner.get(f"/queues/orders/messages/?limit=2&after={first['next']}").context["page"]
    assert ([m["body"] for m in rest["messages"]], rest["next"]) == ([2], None)
    bad = owner.get("/queues/orders/messages/?after=nope")
    assert bad.context["error"] == "after: not an offset (<ms>-<seq>)."


# --- receive and requeue ----------------------------------------------------------------------


def test_receive_and_requeue_shows_what_was_received_and_counts_the_attempt(
    acme: TenantCtx, owner: Client
) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    send(owner, "/queues/orders/messages/send/", body='{"a": 1}', attributes="k=v")
    first = owner.post("/queues/orders/messages/requeue/", {"count": 5})
    assert first.status_code == 200
    (got,) = first.context["received"]
    assert (got["body"], got["attributes"], got["delivery_attempt"]) == ({"a": 1}, {"k": "v"}, 1)
    assert "delivery attempts went up by one" in first.content.decode()
    (message,) = stored(queue)
    assert (message["delivery_attempts"], message["state"]) == (1, "retry")

    second = owner.post("/queues/orders/messages/requeue/", {"count": 1})
    assert [m["delivery_attempt"] for m in second.context["received"]] == [2]
    assert [m["delivery_attempts"] for m in stored(queue)] == [2]
    assert queue_selectors.quiet_stats(queue)["available"] == 1


def test_a_viewer_sees_messages_but_cannot_send_or_requeue(
    acme: TenantCtx, owner: Client, viewer: Client
) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    send(owner, "/queues/orders/messages/send/", body="1")
    page = viewer.get("/queues/orders/messages/")
    assert page.status_code == 200
    assert "Receive and requeue" not in page.content.decode()
    assert viewer.get("/queues/orders/messages/send/").status_code == 403
    assert send(viewer, "/queues/orders/messages/send/", body="2").status_code == 403
    assert viewer.post("/queues/orders/messages/requeue/", {"count": 1}).status_code == 403
    assert [(m["body"], m["delivery_attempts"]) for m in stored(queue)] == [(1, 0)]
    assert published_this_month(acme) == 1


def test_another_tenants_queue_topic_and_subscription_are_404s(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    queue = make_queue(tenant=globex.tenant, name="orders")
    make_topic(tenant=globex.tenant)
    make_subscription(tenant=globex.tenant)
    for path in (
        "/queues/orders/messages/",
        "/queues/orders/messages/send/",
        "/queues/orders/dead-letters/",
        "/topics/events/log/",
        "/topics/events/send/",
        "/subscriptions/audit/messages/",
        "/subscriptions/audit/seek/",
    ):
        assert owner.get(path).status_code == 404, path
    assert send(owner, "/queues/orders/messages/send/", body="1").status_code == 404
    assert owner.post("/queues/orders/messages/requeue/", {"count": 1}).status_code == 404
    act = {"action": "purge", "scope": "all", "confirm": "on"}
    assert owner.post("/queues/orders/dead-letters/act/", act).status_code == 404
    assert stored(queue) == []


# --- topics and subscriptions -----------------------------------------------------------------


def test_topic_log_by_partition_and_seek_a_subscription(acme: TenantCtx, owner: Client) -> None:
    topic = make_topic(tenant=acme.tenant, partitions=2)
    sub = make_subscription(tenant=acme.tenant)
    response = send(owner, "/topics/events/send/", body='"hi"', key="k", attributes="a=b")
    assert response["Location"] == "/topics/events/log/"
    partition = [
        p for p in range(2) if queue_selectors.topic_log(topic, partition=p, limit=5)["messages"]
    ]
    (p,) = partition
    log = owner.get(f"/topics/events/log/?partition={p}")
    (message,) = log.context["page"]["messages"]
    assert (message["body"], message["attributes"], message["key"]) == ("hi", {"a": "b"}, "k")
    other = owner.get(f"/topics/events/log/?partition={1 - p}")
    assert other.context["page"]["messages"] == []
    assert (
        owner.get("/topics/events/log/?partition=2")
        .context["error"]
        .startswith("partition: the topic has partitions 0 to 1.")
    )
    assert owner.get("/subscriptions/audit/messages/").context["stats"]["available"] == 1

    seek = owner.post("/subscriptions/audit/seek/", {"to": "latest"})
    assert seek.status_code == 302
    assert queue_selectors.quiet_stats(sub)["available"] == 0
    owner.post("/subscriptions/audit/seek/", {"to": "earliest"})
    assert queue_selectors.quiet_stats(sub)["available"] == 1
    missing = owner.post("/subscriptions/audit/seek/", {"to": "time"})
    assert missing.context["form"].errors["time"] == ["Give the time to seek to."]
    assert [a for a in trail(acme) if a[0] == "subscription.seek"] == [
        ("subscription.seek", "audit", {"to": "latest"}),
        ("subscription.seek", "audit", {"to": "earliest"}),
    ]


# --- dead letters -----------------------------------------------------------------------------


def test_the_dead_letter_page_lists_source_reason_and_feeders(
    acme: TenantCtx, owner: Client
) -> None:
    _, _, offsets = dead_letters_of(acme, owner, 2)
    page = owner.get("/queues/orders-dlq/dead-letters/")
    assert page.status_code == 200
    rows = page.context["page"]["messages"]
    assert [(m["source"], m["reason"], m["attempts"], m["body"]) for m in rows] == [
        ("queue:orders", "max_delivery_attempts", 1, {"n": 0}),
        ("queue:orders", "max_delivery_attempts", 1, {"n": 1}),
    ]
    assert page.context["feeders"] == {"queues": ["orders"], "subscriptions": []}
    html = page.content.decode()
    assert f'value="{offsets[0]}"' in html
    assert "Fed by" in html
    assert "max_delivery_attempts" in html


def test_redrive_selected_asks_first_then_moves_exactly_those(
    acme: TenantCtx, owner: Client
) -> None:
    orders, dlq, offsets = dead_letters_of(acme, owner, 3)
    chosen = {"action": "redrive", "scope": "selected", "ids": [offsets[0], offsets[2]]}
    confirm = owner.post("/queues/orders-dlq/dead-letters/act/", chosen)
    assert confirm.status_code == 200
    assert [m["offset"] for m in confirm.context["chosen"]] == [offsets[0], offsets[2]]
    assert "Redrive 2 dead letters" in confirm.content.decode()
    assert len(stored(dlq)) == 3
    assert stored(orders) == []

    done = owner.post("/queues/orders-dlq/dead-letters/act/", {**chosen, "confirm": "on"})
    assert done.status_code == 302
    assert done["Location"] == "/queues/orders-dlq/dead-letters/"
    assert [m["offset"] for m in stored(dlq)] == [offsets[1]]
    assert [(m["body"], m["attributes"]) for m in stored(orders)] == [
        ({"n": 0}, {}),
        ({"n": 2}, {}),
    ]
    assert [a for a in trail(acme) if a[0] == "queue.redrive"] == [
        (
            "queue.redrive",
            "orders-dlq",
            {"to": None, "ids": [offsets[0], offsets[2]], "moved": 2, "skipped": 0},
        )
    ]


def test_purge_selected_and_purge_all(acme: TenantCtx, owner: Client) -> None:
    _, dlq, offsets = dead_letters_of(acme, owner, 3)
    one = {"action": "purge", "scope": "selected", "ids": [offsets[1]]}
    assert owner.post("/queues/orders-dlq/dead-letters/act/", one).status_code == 200
    assert len(stored(dlq)) == 3
    owner.post("/queues/orders-dlq/dead-letters/act/", {**one, "confirm": "on"})
    assert [m["offset"] for m in stored(dlq)] == [offsets[0], offsets[2]]

    everything = {"action": "purge", "scope": "all", "confirm": "on"}
    owner.post("/queues/orders-dlq/dead-letters/act/", everything)
    assert stored(dlq) == []
    assert [a for a in trail(acme) if a[0] == "queue.purge"] == [
        ("queue.purge", "orders-dlq", {"purged": 1, "ids": [offsets[1]]}),
        ("queue.purge", "orders-dlq", {"purged": 2}),
    ]


def test_redrive_all_to_another_queue_at_most_max_messages(acme: TenantCtx, owner: Client) -> None:
    _, dlq, offsets = dead_letters_of(acme, owner, 3)
    replay = make_queue(tenant=acme.tenant, name="replay")
    action = {"action": "redrive", "scope": "all", "to": "replay", "max_messages": 2}
    owner.post("/queues/orders-dlq/dead-letters/act/", {**action, "confirm": "on"})
    assert [m["body"] for m in stored(replay)] == [{"n": 0}, {"n": 1}]
    assert [m["offset"] for m in stored(dlq)] == [offsets[2]]


def test_choosing_nothing_acts_on_nothing(acme: TenantCtx, owner: Client) -> None:
    _, dlq, _ = dead_letters_of(acme, owner, 1)
    response = owner.post(
        "/queues/orders-dlq/dead-letters/act/",
        {"action": "purge", "scope": "selected", "confirm": "on"},
    )
    assert response.status_code == 302
    assert len(stored(dlq)) == 1
    assert [a for a in trail(acme) if a[0] == "queue.purge"] == []


def test_a_viewer_sees_dead_letters_but_cannot_act(
    acme: TenantCtx, owner: Client, viewer: Client
) -> None:
    orders, dlq, offsets = dead_letters_of(acme, owner, 2)
    page = viewer.get("/queues/orders-dlq/dead-letters/")
    assert page.status_code == 200
    assert len(page.context["page"]["messages"]) == 2
    assert 'name="ids"' not in page.content.decode()
    for action in ("redrive", "purge"):
        for scope in ("selected", "all"):
            data = {"action": action, "scope": scope, "ids": offsets, "confirm": "on"}
            assert viewer.post("/queues/orders-dlq/dead-letters/act/", data).status_code == 403
    assert [m["offset"] for m in stored(dlq)] == offsets
    assert stored(orders) == []
    assert [a for a in trail(acme) if a[0] in {"queue.purge", "queue.redrive"}] == []
    assert viewer.post("/subscriptions/audit/seek/", {"to": "latest"}).status_code == 403


def test_pages_need_a_login(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    anonymous = Client()
    assert anonymous.get("/queues/orders/messages/").status_code == 302
    assert signed_in(acme.owner).get("/queues/orders/messages/").status_code == 200
