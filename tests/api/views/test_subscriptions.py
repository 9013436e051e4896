"""/v1/subscriptions: create, list, retrieve with stats, change, delete and seek; delivery
from where a subscription starts, attribute filters, validation, quotas, scopes, resource
patterns (by subscription or by topic) and tenant isolation."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from kernel.redis_client import get_redis
from queues.engine.messages import now_ms
from queues.engine.targets import subscription_group
from queues.models import ConsumerPosition, Subscription
from tenants.models import AuditEvent
from tests.engine import ack, bodies, publish_to_topic, pull, settle, subscription_reader
from tests.factories import (
    TenantCtx,
    api_client,
    make_key,
    make_plan,
    make_queue,
    make_subscription,
    make_topic,
)
from tests.helpers import assert_problem, field_errors, patch_json, post_json, untimed

pytestmark = pytest.mark.django_db

DEFAULTS = {
    "visibility_timeout": 30,
    "max_delivery_attempts": None,
    "dead_letter_queue": None,
    "retry_backoff": {"min_seconds": 0, "max_seconds": 600},
    "filter": {"attributes": {}},
    "start_at": "latest",
}
EMPTY_STATS = {"available": 0, "in_flight": 0, "delayed": 0, "oldest_age_seconds": 0}


@pytest.fixture
def events(acme: TenantCtx) -> None:
    """Acme's topic events."""
    make_topic(tenant=acme.tenant, name="events")


def names(ctx: TenantCtx) -> list[str]:
    return sorted(Subscription.objects.for_tenant(ctx.tenant).values_list("name", flat=True))


def snapshot(ctx: TenantCtx) -> list[tuple[Any, ...]]:
    return list(
        Subscription.objects.for_tenant(ctx.tenant)
        .order_by("name")
        .values_list(
            "name",
            "topic__name",
            "visibility_timeout",
            "max_delivery_attempts",
            "dead_letter_queue__name",
            "retry_backoff_min",
            "retry_backoff_max",
            "filter_attributes",
            "start_at",
            "updated_at",
        )
    )


def deliver_all(ctx: TenantCtx, name: str) -> list[Any]:
    """Pull and ack everything the subscription has for now; returns the bodies."""
    reader = subscription_reader(ctx, name)
    messages = pull(reader)
    if messages:
        ack(reader, messages)
    return bodies(messages)


# --- create ---------------------------------------------------------------------------------


def test_create_with_defaults(acme: TenantCtx, events: None) -> None:
    """POST with a name and a topic answers 201 with every setting at its default, and a
    consumer group on the topic's stream."""
    response = post_json(acme.client, "/v1/subscriptions", {"name": "audit", "topic": "events"})

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == {"name": "audit", "topic": "events", **DEFAULTS}
    assert names(acme) == ["audit"]
    assert AuditEvent.objects.for_tenant(acme.tenant).get(action="subscription.create").data == {
        "topic": "events"
    }


def test_create_with_every_setting(acme: TenantCtx, events: None) -> None:
    """Every setting given is stored and echoed."""
    make_queue(tenant=acme.tenant, name="audit-dead")
    body = {
        "name": "audit",
        "topic": "events",
        "visibility_timeout": 600,
        "max_delivery_attempts": 5,
        "dead_letter_queue": "audit-dead",
        "retry_backoff": {"min_seconds": 1, "max_seconds": 120},
        "filter": {"attributes": {"type": "order", "region": ""}},
        "start_at": "earliest",
    }

    response = post_json(acme.client, "/v1/subscriptions", body)

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == body


def test_create_needs_an_existing_topic(acme: TenantCtx, globex: TenantCtx) -> None:
    """A topic that this tenant does not have (even if another tenant has it) is a 400
    naming the field; nothing is created anywhere."""
    make_topic(tenant=globex.tenant, name="events")

    response = post_json(acme.client, "/v1/subscriptions", {"name": "audit", "topic": "events"})

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"topic"}
    assert names(acme) == []
    assert names(globex) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a b"),
        ("topic", "-x"),
        ("visibility_timeout", 43201),
        ("visibility_timeout", -1),
        ("max_delivery_attempts", 0),
        ("start_at", "middle"),
        ("filter", "type=order"),
        ("filter", {"tags": ["a"]}),
        ("filter", {"attributes": {"type": 1}}),
        ("filter", {"attributes": ["type"]}),
        ("filter", {"attributes": {str(n): "v" for n in range(33)}}),
        ("retry_backoff", {"min_seconds": 5, "max_seconds": 1}),
        ("ack_deadline", 10),
    ],
)
def test_create_rejects_bad_fields(acme: TenantCtx, events: None, field: str, value: Any) -> None:
    """A bad name, setting, filter or unknown field is a 400 naming the field, and nothing
    is created."""
    payload = {"name": "audit", "topic": "events", field: value}

    body = assert_problem(
        post_json(acme.client, "/v1/subscriptions", payload), 400, "invalid_request"
    )
    assert {name.split(".")[0] for name in field_errors(body)} == {field}
    assert names(acme) == []


def test_dead_letter_queue_needs_max_delivery_attempts(acme: TenantCtx, events: None) -> None:
    """dead_letter_queue without max_delivery_attempts is a 400."""
    make_queue(tenant=acme.tenant, name="dead")

    response = post_json(
        acme.client,
        "/v1/subscriptions",
        {"name": "audit", "topic": "events", "dead_letter_queue": "dead"},
    )

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"max_delivery_attempts"}
    assert names(acme) == []


def test_duplicate_name_is_a_conflict(acme: TenantCtx, events: None) -> None:
    """A taken name is 409 and the existing subscription is unchanged."""
    make_topic(tenant=acme.tenant, name="other")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    before = snapshot(acme)

    response = post_json(acme.client, "/v1/subscriptions", {"name": "audit", "topic": "other"})

    assert_problem(response, 409, "conflict")
    assert snapshot(acme) == before


def test_quota_exceeded(acme: TenantCtx, events: None) -> None:
    """A plan that allows one subscription answers 403 quota_exceeded for a second."""
    make_plan(tenant=acme.tenant, max_subscriptions=1)
    make_subscription(tenant=acme.tenant, name="first", topic="events")

    response = post_json(acme.client, "/v1/subscriptions", {"name": "second", "topic": "events"})

    assert_problem(response, 403, "quota_exceeded")
    assert names(acme) == ["first"]


# --- where delivery starts, filters ---------------------------------------------------------


def test_start_at_latest_gets_only_new_messages(acme: TenantCtx, events: None) -> None:
    """A subscription created with the default start_at receives what is published after it,
    not what the topic already retained."""
    publish_to_topic(acme, "events", {"body": "before"})

    post_json(acme.client, "/v1/subscriptions", {"name": "audit", "topic": "events"})
    publish_to_topic(acme, "events", {"body": "after"})

    assert deliver_all(acme, "audit") == ["after"]


def test_start_at_earliest_gets_retained_messages(acme: TenantCtx, events: None) -> None:
    """start_at earliest receives every retained message published before it was created."""
    publish_to_topic(acme, "events", {"body": 1}, {"body": 2})

    response = post_json(
        acme.client,
        "/v1/subscriptions",
        {"name": "replay", "topic": "events", "start_at": "earliest"},
    )
    publish_to_topic(acme, "events", {"body": 3})

    assert response.status_code == 201
    assert deliver_all(acme, "replay") == [1, 2, 3]


def test_filter_receives_only_matching_messages(acme: TenantCtx, events: None) -> None:
    """A subscription with an attribute filter receives only messages carrying all those
    attributes; one without a filter receives everything."""
    post_json(
        acme.client,
        "/v1/subscriptions",
        {"name": "eu-orders", "topic": "events", "filter": {"attributes": {"type": "order"}}},
    )
    post_json(acme.client, "/v1/subscriptions", {"name": "all", "topic": "events"})
    publish_to_topic(
        acme,
        "events",
        {"body": 1, "attributes": {"type": "order", "region": "eu"}},
        {"body": 2, "attributes": {"type": "refund"}},
        {"body": 3},
        {"body": 4, "attributes": {"type": "order"}},
    )

    assert deliver_all(acme, "eu-orders") == [1, 4]
    assert deliver_all(acme, "all") == [1, 2, 3, 4]


def test_patched_filter_applies_to_later_deliveries(acme: TenantCtx, events: None) -> None:
    """PATCH filter changes which messages are delivered from then on; an empty attributes
    object removes the filter."""
    make_subscription(
        tenant=acme.tenant, name="audit", topic="events", filter={"attributes": {"type": "a"}}
    )

    narrowed = patch_json(
        acme.client, "/v1/subscriptions/audit", {"filter": {"attributes": {"type": "b"}}}
    )
    publish_to_topic(
        acme,
        "events",
        {"body": 1, "attributes": {"type": "a"}},
        {"body": 2, "attributes": {"type": "b"}},
    )
    first = deliver_all(acme, "audit")
    cleared = patch_json(acme.client, "/v1/subscriptions/audit", {"filter": {"attributes": {}}})
    publish_to_topic(acme, "events", {"body": 3, "attributes": {"type": "a"}})

    assert narrowed.json()["filter"] == {"attributes": {"type": "b"}}
    assert first == [2]
    assert cleared.json()["filter"] == {"attributes": {}}
    assert deliver_all(acme, "audit") == [3]


# --- list, retrieve, stats ------------------------------------------------------------------


def test_list_and_retrieve(acme: TenantCtx, globex: TenantCtx, events: None) -> None:
    """The list is the tenant's subscriptions in name order, paginated; GET by name is one
    subscription with its stats."""
    for name in ["c", "a", "b"]:
        make_subscription(tenant=acme.tenant, name=name, topic="events")
    make_topic(tenant=globex.tenant, name="events")
    make_subscription(tenant=globex.tenant, name="a0", topic="events")

    first = acme.client.get("/v1/subscriptions?limit=2").json()
    second = acme.client.get(f"/v1/subscriptions?limit=2&cursor={first['next']}").json()
    one = acme.client.get("/v1/subscriptions/b")

    assert [s["name"] for s in first["results"]] == ["a", "b"]
    assert [s["name"] for s in second["results"]] == ["c"]
    assert second["next"] is None
    assert untimed(first["results"][0]) == {"name": "a", "topic": "events", **DEFAULTS}
    assert one.status_code == 200
    assert untimed(one.json()) == {
        "name": "b",
        "topic": "events",
        **DEFAULTS,
        "stats": EMPTY_STATS,
    }


def test_stats(acme: TenantCtx, events: None) -> None:
    """After 3 messages are published and 1 is leased, the subscription shows 2 available
    and 1 in flight; another subscription of the topic is independent of it."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    make_subscription(tenant=acme.tenant, name="billing", topic="events")
    publish_to_topic(acme, "events", {"body": 1}, {"body": 2}, {"body": 3})
    assert bodies(pull(subscription_reader(acme, "audit"), 1)) == [1]

    audit = acme.client.get("/v1/subscriptions/audit").json()["stats"]
    billing = acme.client.get("/v1/subscriptions/billing").json()["stats"]

    assert (audit["available"], audit["in_flight"], audit["delayed"]) == (2, 1, 0)
    assert (billing["available"], billing["in_flight"], billing["delayed"]) == (3, 0, 0)
    assert 0 <= audit["oldest_age_seconds"] <= 5


def test_unknown_subscription_is_404(acme: TenantCtx) -> None:
    """A subscription that does not exist is 404 not_found."""
    assert_problem(acme.client.get("/v1/subscriptions/nope"), 404, "not_found")


# --- update and delete ---------------------------------------------------------------------


def test_patch_changes_only_what_is_given(acme: TenantCtx, events: None) -> None:
    """PATCH changes the given settings and keeps the others."""
    make_queue(tenant=acme.tenant, name="dead")
    make_subscription(
        tenant=acme.tenant, name="audit", topic="events", filter={"attributes": {"a": "b"}}
    )

    response = patch_json(
        acme.client,
        "/v1/subscriptions/audit",
        {
            "visibility_timeout": 5,
            "dead_letter_queue": "dead",
            "max_delivery_attempts": 2,
            "retry_backoff": {"min_seconds": 3},
        },
    )

    assert response.status_code == 200, response.content
    assert untimed(response.json()) == {
        "name": "audit",
        "topic": "events",
        **DEFAULTS,
        "visibility_timeout": 5,
        "dead_letter_queue": "dead",
        "max_delivery_attempts": 2,
        "retry_backoff": {"min_seconds": 3, "max_seconds": 600},
        "filter": {"attributes": {"a": "b"}},
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"topic": "other"}, "topic"),
        ({"name": "renamed"}, "name"),
        ({"start_at": "earliest"}, "start_at"),
        ({"visibility_timeout": 43201}, "visibility_timeout"),
        ({"dead_letter_queue": "nowhere", "max_delivery_attempts": 1}, "dead_letter_queue"),
        ({"filter": {"attributes": {"k": None}}}, "filter"),
        ({"owner": "x"}, "owner"),
    ],
)
def test_patch_rejects_bad_changes(
    acme: TenantCtx, events: None, payload: dict[str, Any], field: str
) -> None:
    """Name, topic and start_at cannot change, and settings keep their ranges: 400 naming the
    field, subscription unchanged."""
    make_topic(tenant=acme.tenant, name="other")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    before = snapshot(acme)

    body = assert_problem(
        patch_json(acme.client, "/v1/subscriptions/audit", payload), 400, "invalid_request"
    )
    assert {name.split(".")[0] for name in field_errors(body)} == {field}
    assert snapshot(acme) == before


def test_delete(acme: TenantCtx, events: None, django_capture_on_commit_callbacks: Any) -> None:
    """DELETE answers 204; the subscription and its consumer group are gone, the topic's log
    and other subscriptions are not."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    make_subscription(tenant=acme.tenant, name="billing", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    reader = subscription_reader(acme, "audit")
    audit_group = reader.group

    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete("/v1/subscriptions/audit")

    assert response.status_code == 204
    assert response.content == b""
    assert names(acme) == ["billing"]
    groups = [g["name"].decode() for g in get_redis().xinfo_groups(reader.streams[0])]
    assert audit_group not in groups
    assert len(groups) == 1
    assert get_redis().xlen(reader.streams[0]) == 1
    assert deliver_all(acme, "billing") == [1]


def test_a_dead_letter_queue_in_use_by_a_subscription_cannot_be_deleted(
    acme: TenantCtx, events: None
) -> None:
    """Deleting a queue that a subscription uses for dead letters is a 409 naming it."""
    make_queue(tenant=acme.tenant, name="dead")
    make_subscription(
        tenant=acme.tenant,
        name="audit",
        topic="events",
        dead_letter_queue="dead",
        max_delivery_attempts=2,
    )

    body = assert_problem(acme.client.delete("/v1/queues/dead"), 409, "conflict")
    assert "audit" in body["detail"]


# --- seek -----------------------------------------------------------------------------------


def test_seek_earliest_replays_acknowledged_messages(acme: TenantCtx, events: None) -> None:
    """After every message was delivered and acked, seeking to earliest delivers the whole
    retained log again, as first deliveries; the position is snapshotted."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1}, {"body": 2})
    assert deliver_all(acme, "audit") == [1, 2]
    assert pull(subscription_reader(acme, "audit")) == []

    response = post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": "earliest"})

    assert response.status_code == 200, response.content
    assert response.json() == {"to": "earliest"}
    again = pull(subscription_reader(acme, "audit"))
    assert bodies(again) == [1, 2]
    assert [m["delivery_attempt"] for m in again] == [1, 1]
    sub = Subscription.objects.for_tenant(acme.tenant).get(name="audit")
    assert ConsumerPosition.objects.for_tenant(acme.tenant).filter(subscription=sub).count() == 1


def test_seek_latest_skips_the_backlog(acme: TenantCtx, events: None) -> None:
    """Seeking to latest skips every message not yet delivered; later ones still arrive."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1}, {"body": 2})

    response = post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": "latest"})
    publish_to_topic(acme, "events", {"body": 3})

    assert response.json() == {"to": "latest"}
    assert deliver_all(acme, "audit") == [3]


def test_seek_drops_leases_in_flight(acme: TenantCtx, events: None) -> None:
    """A seek drops leases in flight: the old ack id settles nothing, and the message is
    available again."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    reader = subscription_reader(acme, "audit")
    [leased] = pull(reader)

    post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": "earliest"})

    assert settle(reader, "ack", [leased["ack_id"]]) == (0, [])
    stats = acme.client.get("/v1/subscriptions/audit").json()["stats"]
    assert (stats["available"], stats["in_flight"]) == (1, 0)
    assert bodies(pull(reader)) == [1]


def test_seek_to_a_time(acme: TenantCtx, events: None) -> None:
    """Seeking to a time delivers again exactly the retained messages published at or after
    it, and answers with that time in UTC."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    early = publish_to_topic(acme, "events", {"body": "early-1"}, {"body": "early-2"})
    last_early_ms = int(early[-1]["offset"].split("-")[0])
    while now_ms() <= last_early_ms:
        time.sleep(0.002)
    late = publish_to_topic(acme, "events", {"body": "late-1"}, {"body": "late-2"})
    assert deliver_all(acme, "audit") == ["early-1", "early-2", "late-1", "late-2"]
    late_ms = int(late[0]["offset"].split("-")[0])
    at = datetime.fromtimestamp(late_ms / 1000, UTC)
    sent = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    response = post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": sent})

    assert response.status_code == 200, response.content
    expected = sent if at.microsecond else at.isoformat().replace("+00:00", "Z")
    assert response.json() == {"to": expected}
    assert deliver_all(acme, "audit") == ["late-1", "late-2"]


def test_seek_to_a_time_with_an_offset(acme: TenantCtx, events: None) -> None:
    """A time with a UTC offset is the same instant; the answer shows it in UTC."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")

    response = post_json(
        acme.client, "/v1/subscriptions/audit/seek", {"to": "2030-01-01T02:00:00+02:00"}
    )

    assert response.json() == {"to": "2030-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"to": "now"},
        {"to": "2030-01-01"},
        {"to": "2030-01-01T00:00:00"},
        {"to": "2030-13-01T00:00:00Z"},
        {"to": 1700000000},
        {"to": "earliest", "partition": 0},
    ],
)
def test_seek_rejects_bad_targets(acme: TenantCtx, events: None, payload: dict[str, Any]) -> None:
    """A missing target, anything but earliest/latest/an RFC 3339 time with offset, or an
    unknown field is a 400, and the subscription does not move."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    assert deliver_all(acme, "audit") == [1]

    assert_problem(
        post_json(acme.client, "/v1/subscriptions/audit/seek", payload), 400, "invalid_request"
    )
    assert deliver_all(acme, "audit") == []


def test_seek_needs_the_consume_scope(acme: TenantCtx, events: None) -> None:
    """Seeking is consuming: a manage-only key gets 403 and the subscription does not move;
    a consume-only key may seek."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    assert deliver_all(acme, "audit") == [1]

    denied = post_json(
        api_client(make_key(tenant=acme.tenant, scopes=["manage"])),
        "/v1/subscriptions/audit/seek",
        {"to": "earliest"},
    )

    assert_problem(denied, 403, "forbidden")
    assert deliver_all(acme, "audit") == []
    allowed = post_json(
        api_client(make_key(tenant=acme.tenant, scopes=["consume"])),
        "/v1/subscriptions/audit/seek",
        {"to": "earliest"},
    )
    assert allowed.status_code == 200
    assert deliver_all(acme, "audit") == [1]


# --- scopes and resource patterns ------------------------------------------------------------


def test_key_without_manage_cannot_change_subscriptions(acme: TenantCtx, events: None) -> None:
    """A publish/consume key gets 403 on create, patch and delete, and nothing changes; it
    may read the metadata."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    before = snapshot(acme)
    worker = api_client(make_key(tenant=acme.tenant, scopes=["publish", "consume"]))

    assert_problem(
        post_json(worker, "/v1/subscriptions", {"name": "new", "topic": "events"}),
        403,
        "forbidden",
    )
    assert_problem(
        patch_json(worker, "/v1/subscriptions/audit", {"visibility_timeout": 1}), 403, "forbidden"
    )
    assert_problem(worker.delete("/v1/subscriptions/audit"), 403, "forbidden")
    assert snapshot(acme) == before
    assert worker.get("/v1/subscriptions/audit").status_code == 200


def test_key_covering_the_subscription_or_its_topic(acme: TenantCtx, events: None) -> None:
    """A subscription is reached by a key covering subscription:<name> or topic:<its topic>;
    a key covering neither gets 403, and the list shows what each key reaches."""
    make_topic(tenant=acme.tenant, name="billing")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    make_subscription(tenant=acme.tenant, name="invoices", topic="billing")
    by_name = api_client(
        make_key(tenant=acme.tenant, scopes=["consume"], resources=["subscription:audit"])
    )
    by_topic = api_client(
        make_key(tenant=acme.tenant, scopes=["consume"], resources=["topic:billing"])
    )
    neither = api_client(make_key(tenant=acme.tenant, scopes=["consume"], resources=["queue:*"]))

    assert by_name.get("/v1/subscriptions/audit").status_code == 200
    assert_problem(by_name.get("/v1/subscriptions/invoices"), 403, "forbidden")
    assert by_topic.get("/v1/subscriptions/invoices").status_code == 200
    assert_problem(by_topic.get("/v1/subscriptions/audit"), 403, "forbidden")
    assert_problem(neither.get("/v1/subscriptions/audit"), 403, "forbidden")
    assert_problem(
        post_json(neither, "/v1/subscriptions/audit/seek", {"to": "earliest"}), 403, "forbidden"
    )
    assert [s["name"] for s in by_name.get("/v1/subscriptions").json()["results"]] == ["audit"]
    assert [s["name"] for s in by_topic.get("/v1/subscriptions").json()["results"]] == ["invoices"]
    assert neither.get("/v1/subscriptions").json() == {"results": [], "next": None}


def test_creating_needs_the_topic_covered(acme: TenantCtx, events: None) -> None:
    """A subscription reads its whole topic, so creating one needs a key covering the topic
    (and any dead-letter queue): 403 otherwise, and nothing is created."""
    make_topic(tenant=acme.tenant, name="secret")
    make_queue(tenant=acme.tenant, name="dead")
    by_name = api_client(
        make_key(tenant=acme.tenant, scopes=["manage"], resources=["subscription:audit"])
    )
    by_topic = api_client(
        make_key(tenant=acme.tenant, scopes=["manage"], resources=["topic:events"])
    )

    assert_problem(
        post_json(by_name, "/v1/subscriptions", {"name": "audit", "topic": "secret"}),
        403,
        "forbidden",
    )
    assert_problem(
        post_json(
            by_topic,
            "/v1/subscriptions",
            {
                "name": "audit",
                "topic": "events",
                "dead_letter_queue": "dead",
                "max_delivery_attempts": 1,
            },
        ),
        403,
        "forbidden",
    )
    assert names(acme) == []
    created = post_json(by_topic, "/v1/subscriptions", {"name": "audit", "topic": "events"})
    assert created.status_code == 201
    assert_problem(
        patch_json(
            by_topic,
            "/v1/subscriptions/audit",
            {"dead_letter_queue": "dead", "max_delivery_attempts": 1},
        ),
        403,
        "forbidden",
    )
    assert snapshot(acme)[0][4] is None


# --- tenant isolation ----------------------------------------------------------------------


CROSS_TENANT = [
    ("get", "/v1/subscriptions/audit", None),
    ("patch", "/v1/subscriptions/audit", {"visibility_timeout": 1}),
    ("delete", "/v1/subscriptions/audit", None),
    ("post", "/v1/subscriptions/audit/seek", {"to": "earliest"}),
]


@pytest.mark.parametrize(("method", "path", "payload"), CROSS_TENANT)
def test_another_tenants_subscription_is_not_found(
    acme: TenantCtx,
    globex: TenantCtx,
    events: None,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Globex's key gets 404 not_found on each of acme's subscription endpoints; acme's
    subscription, its consumer group and its position are untouched."""
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    assert deliver_all(acme, "audit") == [1]
    before = snapshot(acme)
    reader = subscription_reader(acme, "audit")
    sub = Subscription.objects.for_tenant(acme.tenant).get(name="audit")

    with django_capture_on_commit_callbacks(execute=True):
        call = getattr(globex.client, method)
        if payload is None:
            response = call(path)
        else:
            response = call(path, data=orjson.dumps(payload), content_type="application/json")

    assert_problem(response, 404, "not_found")
    assert snapshot(acme) == before
    groups = [g["name"].decode() for g in get_redis().xinfo_groups(reader.streams[0])]
    assert groups == [subscription_group(str(sub.id))]
    assert deliver_all(acme, "audit") == []
    assert globex.client.get("/v1/subscriptions").json() == {"results": [], "next": None}
