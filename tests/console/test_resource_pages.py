"""The list, detail, edit and delete pages of queues, topics and subscriptions."""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from queues.engine.messages import now_ms
from queues.models import Queue, Subscription, Topic
from tenants.models import AuditEvent, Role
from tests.engine import publish_to_queue, pull, queue_reader
from tests.factories import (
    TenantCtx,
    make_member,
    make_queue,
    make_subscription,
    make_topic,
    signed_in,
)

ACTOR = "user:owner@acme.test"
EMPTY_STATS = {"available": 0, "in_flight": 0, "delayed": 0, "oldest_age_seconds": 0}


def audit_trail(ctx: TenantCtx) -> list[tuple[str, str, str, Any]]:
    """(actor, action, target, data) of the tenant's audit events but the fixtures' own."""
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .exclude(actor__in=["operator", "test"])
        .order_by("id")
        .values_list("actor", "action", "target_id", "data")
    )


def names(response: Any) -> list[str]:
    return [getattr(row, "item", row).name for row in response.context["rows"]]


def queue_settings(queue: Queue) -> tuple[Any, ...]:
    queue.refresh_from_db()
    return (
        queue.visibility_timeout,
        queue.delay_seconds,
        queue.retention_seconds,
        queue.dead_letter_queue.name if queue.dead_letter_queue else None,
        queue.max_delivery_attempts,
        queue.retry_backoff_min,
        queue.retry_backoff_max,
    )


def queue_edit_form(queue: Queue, **changes: Any) -> dict[str, Any]:
    """The edit form as the page fills it in for ``queue``, with ``changes``."""
    return {
        "visibility_timeout": queue.visibility_timeout,
        "delay_seconds": queue.delay_seconds,
        "retention_seconds": queue.retention_seconds,
        "dead_letter_queue": queue.dead_letter_queue.name if queue.dead_letter_queue else "",
        "max_delivery_attempts": queue.max_delivery_attempts or "",
        "retry_backoff_min": queue.retry_backoff_min,
        "retry_backoff_max": queue.retry_backoff_max,
        **changes,
    }


@pytest.fixture
def hundred_twenty(acme: TenantCtx) -> list[str]:
    """Queues q1..q120 of Acme, made in a shuffled order."""
    wanted = [f"q{i}" for i in range(1, 121)]
    shuffled = wanted[:]
    random.Random(7).shuffle(shuffled)
    for name in shuffled:
        make_queue(tenant=acme.tenant, name=name)
    return wanted


# --- lists -------------------------------------------------------------------------------------


def test_queue_list_pages_through_in_natural_order(
    hundred_twenty: list[str], owner: Client
) -> None:
    """50 a page, "q2" before "q10", with previous / next links; a page past the end shows
    the last one."""
    first = owner.get("/queues/")
    assert first.status_code == 200
    assert names(first) == [f"q{i}" for i in range(1, 51)]
    assert (first.context["prev_url"], first.context["next_url"]) == (None, "/queues/?page=2")
    second = owner.get("/queues/?page=2")
    assert names(second) == [f"q{i}" for i in range(51, 101)]
    assert (second.context["prev_url"], second.context["next_url"]) == (
        "/queues/?page=1",
        "/queues/?page=3",
    )
    third = owner.get("/queues/?page=3")
    assert names(third) == [f"q{i}" for i in range(101, 121)]
    assert (third.context["prev_url"], third.context["next_url"]) == ("/queues/?page=2", None)
    assert "101\u2013120 of 120 \u00b7 page 3 of 3" in third.content.decode()
    assert names(owner.get("/queues/?page=99")) == names(third)
    assert names(owner.get("/queues/?page=nonsense")) == names(first)


def test_queue_search_matches_any_case_and_keeps_natural_order(
    hundred_twenty: list[str], owner: Client
) -> None:
    """?q= keeps the names containing it, whatever their case, and the pages keep the query."""
    response = owner.get("/queues/?q=Q1")
    expected = [name for name in hundred_twenty if "q1" in name]
    assert len(expected) == 32
    assert names(response) == expected
    assert response.context["search"] == "Q1"
    assert response.context["next_url"] is None
    assert names(owner.get("/queues/?q=11")) == ["q11", *(f"q11{i}" for i in range(10))]


def test_search_pages_keep_the_query(acme: TenantCtx, owner: Client) -> None:
    """The next link of a searched list carries the search."""
    for i in range(1, 56):
        make_queue(tenant=acme.tenant, name=f"orders-{i}")
    make_queue(tenant=acme.tenant, name="billing")
    first = owner.get("/queues/?q=ORDERS")
    assert names(first)[:3] == ["orders-1", "orders-2", "orders-3"]
    assert len(names(first)) == 50
    assert first.context["next_url"] == "/queues/?q=ORDERS&page=2"
    assert names(owner.get(first.context["next_url"])) == [f"orders-{i}" for i in range(51, 56)]


def test_natural_order_puts_case_and_punctuation_together(acme: TenantCtx, owner: Client) -> None:
    """Letters sort without regard to case first, and digits by their value."""
    for name in ("orders10", "Orders-EU", "billing", "orders2", "Alpha"):
        make_queue(tenant=acme.tenant, name=name)
    assert names(owner.get("/queues/")) == ["Alpha", "billing", "Orders-EU", "orders2", "orders10"]
    assert names(owner.get("/queues/?q=ORDERS")) == ["Orders-EU", "orders2", "orders10"]


def test_queue_list_shows_live_numbers_of_its_rows(acme: TenantCtx, owner: Client) -> None:
    """Each row on the page has its queue's numbers as a pull would see them now."""
    make_queue(tenant=acme.tenant, name="orders", visibility_timeout=45)
    make_queue(tenant=acme.tenant, name="idle")
    now = now_ms()
    publish_to_queue(acme, "orders", *({"body": {"n": i}} for i in range(3)), now=now)
    pull(queue_reader(acme, "orders"), 1, now=now)
    response = owner.get("/queues/")
    rows = {row.item.name: row.stats for row in response.context["rows"]}
    assert rows["idle"] == EMPTY_STATS
    assert (rows["orders"]["available"], rows["orders"]["in_flight"]) == (2, 1)
    assert response.context["stats_unavailable"] is False
    assert 'href="/queues/orders/"' in response.content.decode()


def test_list_page_queries_do_not_grow_with_the_rows(
    acme: TenantCtx, owner: Client, django_assert_max_num_queries: Any
) -> None:
    """A page of 3 queues and a page of 50 out of 120 cost the same number of queries."""
    for i in range(3):
        make_queue(tenant=acme.tenant, name=f"a{i}")
    with CaptureQueriesContext(connection) as few:
        owner.get("/queues/")
    for i in range(117):
        make_queue(tenant=acme.tenant, name=f"b{i}")
    with django_assert_max_num_queries(len(few)):
        response = owner.get("/queues/?page=2")
    assert len(response.context["rows"]) == 50
    assert len(few) <= 8


def test_ten_thousand_queues_are_one_page_of_work(
    acme: TenantCtx, owner: Client, django_assert_max_num_queries: Any
) -> None:
    """With 10,000 queues a page still loads only its 50 rows, in a bounded number of
    queries, sorted by PostgreSQL."""
    # Rows written directly: 10,000 service calls would only slow the test down, and the
    # list reads rows (the stats of a queue without Redis structures are zeros).
    Queue.all_tenants.bulk_create(
        [Queue(tenant=acme.tenant, name=f"q{i}") for i in range(1, 10_001)]
    )
    with django_assert_max_num_queries(8):
        response = owner.get("/queues/?page=200")
    assert names(response) == [f"q{i}" for i in range(9951, 10_001)]
    assert response.context["page"].paginator.count == 10_000


def test_topic_and_subscription_lists(acme: TenantCtx, owner: Client) -> None:
    """Topics show their subscription count; subscriptions their topic and filter."""
    make_topic(tenant=acme.tenant, name="events10", partitions=4)
    make_topic(tenant=acme.tenant, name="events2")
    make_subscription(tenant=acme.tenant, name="audit", topic="events10")
    make_subscription(
        tenant=acme.tenant,
        name="billing",
        topic="events10",
        filter={"attributes": {"type": "invoice"}},
    )
    topics = owner.get("/topics/")
    assert [(t.name, t.partitions, t.subscription_count) for t in topics.context["rows"]] == [
        ("events2", 1, 0),
        ("events10", 4, 2),
    ]
    subs = owner.get("/subscriptions/?q=bill")
    assert [(r.item.name, r.item.topic.name, r.stats) for r in subs.context["rows"]] == [
        ("billing", "events10", EMPTY_STATS)
    ]
    assert "<code>type=invoice</code>" in subs.content.decode()


def test_empty_lists_say_so(acme: TenantCtx, owner: Client, viewer: Client) -> None:
    """No resource yet: an invitation to create one (writers only); no match: the search."""
    body = owner.get("/queues/").content.decode()
    assert "No queues yet." in body
    assert 'href="/new/queue/"' in body
    viewer_body = viewer.get("/queues/").content.decode()
    assert "No queues yet." in viewer_body
    assert 'href="/new/queue/"' not in viewer_body
    assert "No topics yet." in owner.get("/topics/").content.decode()
    assert "No subscriptions yet." in owner.get("/subscriptions/").content.decode()
    make_queue(tenant=acme.tenant, name="orders")
    assert "No queue name contains “zzz”." in owner.get("/queues/?q=zzz").content.decode()


def test_lists_show_only_this_tenants_resources(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    make_queue(tenant=globex.tenant, name="globex-orders")
    make_topic(tenant=globex.tenant, name="globex-events")
    make_subscription(tenant=globex.tenant, name="globex-audit", topic="globex-events")
    assert names(owner.get("/queues/")) == ["orders"]
    assert names(owner.get("/topics/")) == []
    assert names(owner.get("/subscriptions/")) == []


def test_navigation_leads_to_the_lists(acme: TenantCtx, owner: Client) -> None:
    """The top bar links to the list pages and the dashboard's names to the detail pages."""
    make_queue(tenant=acme.tenant, name="orders")
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    body = owner.get("/").content.decode()
    for href in (
        "/queues/",
        "/topics/",
        "/subscriptions/",
        "/queues/orders/",
        "/topics/events/",
        "/subscriptions/audit/",
    ):
        assert f'href="{href}"' in body


# --- detail pages ------------------------------------------------------------------------------


def test_queue_page_shows_every_setting(acme: TenantCtx, owner: Client) -> None:
    """Settings, live numbers, and which dead-letter queue the queue feeds."""
    make_queue(tenant=acme.tenant, name="orders-dlq")
    make_queue(
        tenant=acme.tenant,
        name="orders",
        visibility_timeout=45,
        delay_seconds=5,
        retention_seconds=3600,
        dead_letter_queue="orders-dlq",
        max_delivery_attempts=4,
        retry_backoff={"min_seconds": 2, "max_seconds": 120},
    )
    publish_to_queue(acme, "orders", {"body": {"n": 1}, "delay_seconds": 0})
    response = owner.get("/queues/orders/")
    assert response.status_code == 200
    stats = response.context["stats"]
    assert (stats["available"], stats["in_flight"], stats["delayed"]) == (1, 0, 0)
    body = response.content.decode()
    for text in (
        '<dt>Visibility timeout</dt><dd>45 s <span class="muted small">(45 s)</span></dd>',
        "<dt>Delivery delay</dt><dd>5 s",
        '<dt>Retention</dt><dd>1 h <span class="muted small">(3600 s)</span></dd>',
        "<dt>Max delivery attempts</dt><dd>4</dd>",
        '<dt>Dead-letter queue</dt><dd><a class="mono" href="/queues/orders-dlq/">orders-dlq</a>',
        "<dt>Retry backoff</dt><dd>2 s to 2 min",
        'feeds dead-letter queue <a class="mono" href="/queues/orders-dlq/">orders-dlq</a>',
        'href="/queues/orders/edit/"',
        'href="/queues/orders/delete/"',
    ):
        assert text in body, text
    assert "{#" not in body  # no template comment leaks into the page


def test_resources_named_new_have_their_pages(acme: TenantCtx, owner: Client) -> None:
    """ "new" is a valid name: the create forms live under /new/, so nothing shadows the pages
    of a queue, topic or subscription called that."""
    make_queue(tenant=acme.tenant, name="new")
    make_topic(tenant=acme.tenant, name="new")
    make_subscription(tenant=acme.tenant, name="new", topic="new")
    for path, kind in (
        ("/queues/new/", "queue"),
        ("/topics/new/", "topic"),
        ("/subscriptions/new/", "subscription"),
    ):
        response = owner.get(path)
        assert response.status_code == 200, path
        assert response.context[kind].name == "new", path
    assert "form" in owner.get("/new/queue/").context


def test_dead_letter_queue_page_names_its_users(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="dlq")
    make_queue(tenant=acme.tenant, name="orders", dead_letter_queue="dlq", max_delivery_attempts=3)
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(
        tenant=acme.tenant, name="audit", dead_letter_queue="dlq", max_delivery_attempts=2
    )
    response = owner.get("/queues/dlq/")
    assert response.context["feeders"] == {"queues": ["orders"], "subscriptions": ["audit"]}
    body = response.content.decode()
    assert (
        'Dead-letter queue of:\n        <a class="mono" href="/queues/orders/">orders</a>, ' in body
    )
    assert '<a class="mono" href="/subscriptions/audit/">audit</a>' in body


def test_topic_page_shows_settings_and_subscriptions(acme: TenantCtx, owner: Client) -> None:
    make_topic(tenant=acme.tenant, name="events", partitions=3, retention_seconds=7200)
    make_subscription(tenant=acme.tenant, name="sub10")
    make_subscription(tenant=acme.tenant, name="sub2", filter={"attributes": {"region": "eu"}})
    response = owner.get("/topics/events/")
    assert response.status_code == 200
    assert [(r.item.name, r.stats) for r in response.context["subscriptions"]] == [
        ("sub2", EMPTY_STATS),
        ("sub10", EMPTY_STATS),
    ]
    body = response.content.decode()
    assert "<dt>Partitions</dt><dd>3 " in body
    assert "<dt>Retention</dt><dd>2 h" in body
    assert "<code>region=eu</code>" in body
    assert 'href="/subscriptions/sub2/"' in body


def test_subscription_page_shows_every_setting(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="dlq")
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_subscription(
        tenant=acme.tenant,
        name="audit",
        visibility_timeout=90,
        dead_letter_queue="dlq",
        max_delivery_attempts=6,
        retry_backoff={"min_seconds": 1, "max_seconds": 30},
        filter={"attributes": {"region": "eu", "type": "order"}},
        start_at="earliest",
    )
    response = owner.get("/subscriptions/audit/")
    assert response.status_code == 200
    assert response.context["stats"] == EMPTY_STATS
    body = response.content.decode()
    for text in (
        'of topic <a class="mono" href="/topics/events/">events</a>',
        "(2 partitions)",
        "<code>region=eu</code>",
        "<code>type=order</code>",
        "<dt>Visibility timeout</dt><dd>1 min 30 s",
        "<dt>Max delivery attempts</dt><dd>6</dd>",
        'feeds dead-letter queue <a class="mono" href="/queues/dlq/">dlq</a>',
        "<dt>Retry backoff</dt><dd>1 s to 30 s",
        "<dt>Started at</dt><dd>earliest",
    ):
        assert text in body, text


# --- edit ----------------------------------------------------------------------------------------


def test_edit_queue_changes_exactly_the_given_settings(acme: TenantCtx, owner: Client) -> None:
    """Only the changed settings reach the service and the audit event; the rest stays."""
    make_queue(tenant=acme.tenant, name="dlq")
    queue = make_queue(tenant=acme.tenant, name="orders", visibility_timeout=45)
    form = owner.get("/queues/orders/edit/").context["form"]
    assert form.fields["dead_letter_queue"].choices == [("", "None"), ("dlq", "dlq")]
    response = owner.post(
        "/queues/orders/edit/",
        queue_edit_form(
            queue,
            retention_seconds=7200,
            dead_letter_queue="dlq",
            max_delivery_attempts=5,
            retry_backoff_min=3,
        ),
    )
    assert response.status_code == 302
    assert response["Location"] == "/queues/orders/"
    assert queue_settings(queue) == (45, 0, 7200, "dlq", 5, 3, 600)
    assert audit_trail(acme) == [
        (
            ACTOR,
            "queue.update",
            "orders",
            {
                "retention_seconds": 7200,
                "dead_letter_queue": "dlq",
                "max_delivery_attempts": 5,
                "retry_backoff": {"min_seconds": 3, "max_seconds": 600},
            },
        )
    ]
    assert "Queue “orders” saved." in owner.get("/queues/orders/").content.decode()


def test_edit_with_nothing_changed_calls_no_service(acme: TenantCtx, owner: Client) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    before = queue_settings(queue)
    response = owner.post("/queues/orders/edit/", queue_edit_form(queue))
    assert response.status_code == 302
    assert queue_settings(queue) == before
    assert audit_trail(acme) == []


def test_edit_refused_by_the_service_shows_on_the_form(acme: TenantCtx, owner: Client) -> None:
    """A dead-letter queue without an attempt count is the service's error; nothing changes."""
    make_queue(tenant=acme.tenant, name="dlq")
    queue = make_queue(tenant=acme.tenant, name="orders")
    before = queue_settings(queue)
    response = owner.post(
        "/queues/orders/edit/", queue_edit_form(queue, dead_letter_queue="dlq", delay_seconds=9)
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "max_delivery_attempts": [
            "Set dead_letter_queue and max_delivery_attempts together (or neither)."
        ]
    }
    assert queue_settings(queue) == before
    assert audit_trail(acme) == []


def test_edit_form_checks_the_backoff(acme: TenantCtx, owner: Client) -> None:
    queue = make_queue(tenant=acme.tenant, name="orders")
    response = owner.post(
        "/queues/orders/edit/", queue_edit_form(queue, retry_backoff_min=50, retry_backoff_max=5)
    )
    assert response.context["form"].errors == {"retry_backoff_max": ["At least the first wait."]}
    assert audit_trail(acme) == []


def test_a_queue_is_not_offered_as_its_own_dead_letter_queue(
    acme: TenantCtx, owner: Client
) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    form = owner.get("/queues/orders/edit/").context["form"]
    assert form.fields["dead_letter_queue"].choices == [("", "None")]


def test_edit_topic_keeps_its_partitions(acme: TenantCtx, owner: Client) -> None:
    """Partitions are shown, not changeable: a posted value is ignored."""
    make_topic(tenant=acme.tenant, name="events", partitions=3)
    page = owner.get("/topics/events/edit/")
    assert "break the per-key order" in page.content.decode()
    assert page.context["form"].fields["partitions"].disabled is True
    response = owner.post("/topics/events/edit/", {"partitions": 8, "retention_seconds": 3600})
    assert response.status_code == 302
    topic = Topic.objects.for_tenant(acme.tenant).get(name="events")
    assert (topic.partitions, topic.retention_seconds) == (3, 3600)
    assert audit_trail(acme) == [(ACTOR, "topic.update", "events", {"retention_seconds": 3600})]


def test_edit_subscription_filter_and_delivery(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="dlq")
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", filter={"attributes": {"a": "1"}})
    page = owner.get("/subscriptions/audit/edit/")
    assert 'name="filter_attributes"' in page.content.decode()
    assert ">\na=1</textarea>" in page.content.decode()
    response = owner.post(
        "/subscriptions/audit/edit/",
        {
            "filter_attributes": "region = eu\n\ntype=order.created\n",
            "visibility_timeout": 30,
            "dead_letter_queue": "dlq",
            "max_delivery_attempts": 3,
            "retry_backoff_min": 0,
            "retry_backoff_max": 600,
        },
    )
    assert response.status_code == 302
    sub = Subscription.objects.for_tenant(acme.tenant).get(name="audit")
    assert sub.filter_attributes == {"region": "eu", "type": "order.created"}
    assert (sub.dead_letter_queue.name, sub.max_delivery_attempts) == ("dlq", 3)
    assert audit_trail(acme) == [
        (
            ACTOR,
            "subscription.update",
            "audit",
            {
                "dead_letter_queue": "dlq",
                "max_delivery_attempts": 3,
                "filter": {"attributes": {"region": "eu", "type": "order.created"}},
            },
        )
    ]


def test_filter_lines_must_be_name_value(acme: TenantCtx, owner: Client) -> None:
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit")
    response = owner.post(
        "/subscriptions/audit/edit/",
        {"filter_attributes": "region=eu\nnonsense", "visibility_timeout": 30},
    )
    assert response.context["form"].errors == {
        "filter_attributes": ["Line 2: expected name=value."]
    }
    assert Subscription.objects.for_tenant(acme.tenant).get().filter_attributes == {}
    assert audit_trail(acme) == []


def test_create_subscription_with_filter_dead_letters_and_backoff(
    acme: TenantCtx, owner: Client
) -> None:
    """The create form covers the filter, the dead-letter pair, the backoff and visibility."""
    make_queue(tenant=acme.tenant, name="dlq")
    make_topic(tenant=acme.tenant, name="events")
    form = owner.get("/new/subscription/").context["form"]
    assert list(form.fields) == [
        "name",
        "topic",
        "start_at",
        "filter_attributes",
        "visibility_timeout",
        "dead_letter_queue",
        "max_delivery_attempts",
        "retry_backoff_min",
        "retry_backoff_max",
    ]
    response = owner.post(
        "/new/subscription/",
        {
            "name": "billing",
            "topic": "events",
            "start_at": "latest",
            "filter_attributes": "type=invoice",
            "visibility_timeout": 60,
            "dead_letter_queue": "dlq",
            "max_delivery_attempts": 4,
            "retry_backoff_min": 5,
            "retry_backoff_max": 50,
        },
    )
    assert response.status_code == 302
    sub = Subscription.objects.for_tenant(acme.tenant).get(name="billing")
    assert (
        sub.filter_attributes,
        sub.visibility_timeout,
        sub.dead_letter_queue.name,
        sub.max_delivery_attempts,
        sub.retry_backoff_min,
        sub.retry_backoff_max,
    ) == ({"type": "invoice"}, 60, "dlq", 4, 5, 50)


# --- delete --------------------------------------------------------------------------------------


def test_delete_needs_the_exact_name(acme: TenantCtx, owner: Client) -> None:
    """Another spelling deletes nothing; the exact name deletes the queue and audits it."""
    make_queue(tenant=acme.tenant, name="orders")
    assert owner.get("/queues/orders/delete/").status_code == 200
    for typed in ("Orders", "orders ", ""):
        response = owner.post("/queues/orders/delete/", {"confirm": typed})
        assert response.status_code == 200
        assert "confirm" in response.context["form"].errors
    assert Queue.objects.for_tenant(acme.tenant).filter(name="orders").exists()
    assert audit_trail(acme) == []
    response = owner.post("/queues/orders/delete/", {"confirm": "orders"})
    assert response.status_code == 302
    assert response["Location"] == "/queues/"
    assert not Queue.objects.for_tenant(acme.tenant).exists()
    assert audit_trail(acme) == [(ACTOR, "queue.delete", "orders", {})]


def test_delete_is_post_only(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="orders")
    assert owner.delete("/queues/orders/delete/").status_code == 405
    assert Queue.objects.for_tenant(acme.tenant).filter(name="orders").exists()


def test_a_dead_letter_queue_in_use_is_not_deleted(acme: TenantCtx, owner: Client) -> None:
    make_queue(tenant=acme.tenant, name="dlq")
    make_queue(tenant=acme.tenant, name="orders", dead_letter_queue="dlq", max_delivery_attempts=3)
    page = owner.get("/queues/dlq/delete/").content.decode()
    assert "This queue is a dead-letter queue." in page
    response = owner.post("/queues/dlq/delete/", {"confirm": "dlq"})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Queue 'dlq' is the dead-letter queue of orders; change those first."
    ]
    assert Queue.objects.for_tenant(acme.tenant).filter(name="dlq").exists()
    assert audit_trail(acme) == []


def test_delete_topic_and_subscription(acme: TenantCtx, owner: Client) -> None:
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit")
    make_subscription(tenant=acme.tenant, name="billing")
    assert owner.post("/subscriptions/audit/delete/", {"confirm": "audit"})["Location"] == (
        "/subscriptions/"
    )
    page = owner.get("/topics/events/delete/").content.decode()
    assert '<span class="mono">billing</span>' in page
    assert owner.post("/topics/events/delete/", {"confirm": "events"})["Location"] == "/topics/"
    assert not Topic.objects.for_tenant(acme.tenant).exists()
    assert not Subscription.objects.for_tenant(acme.tenant).exists()
    assert [(a, t) for _, a, t, _ in audit_trail(acme)] == [
        ("subscription.delete", "audit"),
        ("topic.delete", "events"),
    ]


# --- who may -------------------------------------------------------------------------------------


def test_viewer_sees_pages_but_cannot_change_anything(acme: TenantCtx, viewer: Client) -> None:
    """No edit or delete controls; edit and delete pages and their POSTs are 403s that
    change nothing."""
    queue = make_queue(tenant=acme.tenant, name="orders")
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit")
    before = queue_settings(queue)
    for kind, name in (("queues", "orders"), ("topics", "events"), ("subscriptions", "audit")):
        page = viewer.get(f"/{kind}/{name}/")
        assert page.status_code == 200
        body = page.content.decode()
        assert f'href="/{kind}/{name}/edit/"' not in body
        assert f'href="/{kind}/{name}/delete/"' not in body
        assert f'href="/{kind}/new/"' not in viewer.get(f"/{kind}/").content.decode()
        assert viewer.get(f"/{kind}/{name}/edit/").status_code == 403
        assert viewer.get(f"/{kind}/{name}/delete/").status_code == 403
        assert viewer.post(f"/{kind}/{name}/delete/", {"confirm": name}).status_code == 403
    response = viewer.post("/queues/orders/edit/", queue_edit_form(queue, retention_seconds=60))
    assert response.status_code == 403
    assert queue_settings(queue) == before
    assert Topic.objects.for_tenant(acme.tenant).count() == 1
    assert Subscription.objects.for_tenant(acme.tenant).count() == 1
    assert audit_trail(acme) == []


def test_developer_may_edit(acme: TenantCtx) -> None:
    developer = signed_in(
        make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER)
    )
    queue = make_queue(tenant=acme.tenant, name="orders")
    response = developer.post("/queues/orders/edit/", queue_edit_form(queue, delay_seconds=3))
    assert response.status_code == 302
    assert queue_settings(queue)[1] == 3


def test_another_tenants_names_are_404(acme: TenantCtx, globex: TenantCtx, owner: Client) -> None:
    """Globex's queue, topic and subscription do not exist for Acme: every page and POST is a
    404 and Globex's rows stay as they were."""
    queue = make_queue(tenant=globex.tenant, name="secret")
    make_topic(tenant=globex.tenant, name="secret-events")
    make_subscription(tenant=globex.tenant, name="secret-sub", topic="secret-events")
    before = queue_settings(queue)
    for kind, name in (
        ("queues", "secret"),
        ("topics", "secret-events"),
        ("subscriptions", "secret-sub"),
    ):
        assert owner.get(f"/{kind}/{name}/").status_code == 404
        assert owner.get(f"/{kind}/{name}/edit/").status_code == 404
        assert owner.post(f"/{kind}/{name}/delete/", {"confirm": name}).status_code == 404
    assert (
        owner.post("/queues/secret/edit/", queue_edit_form(queue, delay_seconds=9)).status_code
        == 404
    )
    assert queue_settings(queue) == before
    assert Topic.objects.for_tenant(globex.tenant).count() == 1
    assert Subscription.objects.for_tenant(globex.tenant).count() == 1
    assert (
        list(
            AuditEvent.objects.for_tenant(globex.tenant)
            .exclude(actor__in=["operator", "test"])
            .values_list("action", flat=True)
        )
        == []
    )
