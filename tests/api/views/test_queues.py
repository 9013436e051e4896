"""/v1/queues: create, list, retrieve with stats, change, delete, purge, redrive and peek;
validation, quotas, scopes, resource patterns and tenant isolation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.test import Client

from kernel.redis_client import get_redis
from queues import selectors
from queues.engine.messages import now_ms
from queues.engine.targets import queue_keys
from queues.models import Queue
from tenants.models import AuditEvent
from tests.engine import ack, bodies, publish_to_queue, pull, queue_reader
from tests.factories import TenantCtx, api_client, make_key, make_plan, make_queue
from tests.helpers import assert_problem, field_errors, patch_json, post_json, untimed

pytestmark = pytest.mark.django_db

DEFAULTS = {
    "visibility_timeout": 30,
    "delay_seconds": 0,
    "retention_seconds": 345600,
    "max_delivery_attempts": None,
    "dead_letter_queue": None,
    "retry_backoff": {"min_seconds": 0, "max_seconds": 600},
    "max_backlog_messages": None,
    "max_backlog_bytes": None,
    "fair": False,
}
EMPTY_STATS = {"available": 0, "in_flight": 0, "delayed": 0, "oldest_age_seconds": 0}


def queue_row(ctx: TenantCtx, name: str) -> Queue:
    return selectors.queue_get(tenant=ctx.tenant, name=name)


def queue_names(ctx: TenantCtx) -> list[str]:
    return sorted(Queue.objects.for_tenant(ctx.tenant).values_list("name", flat=True))


def stream_key(ctx: TenantCtx, name: str) -> str:
    return queue_keys(str(ctx.tenant.id), str(queue_row(ctx, name).id))["stream"]


def snapshot(ctx: TenantCtx) -> list[tuple[Any, ...]]:
    """Every queue row of the tenant, to show that nothing changed."""
    return list(
        Queue.objects.for_tenant(ctx.tenant)
        .order_by("name")
        .values_list(
            "name",
            "visibility_timeout",
            "delay_seconds",
            "retention_seconds",
            "max_delivery_attempts",
            "dead_letter_queue__name",
            "retry_backoff_min",
            "retry_backoff_max",
            "updated_at",
        )
    )


# --- create ---------------------------------------------------------------------------------


def test_create_with_defaults(acme: TenantCtx) -> None:
    """POST with just a name answers 201 with every setting at its documented default, and
    the creation is in the audit trail."""
    response = post_json(acme.client, "/v1/queues", {"name": "orders"})

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == {"name": "orders", **DEFAULTS}
    assert queue_names(acme) == ["orders"]
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="queue.create")
    assert event.target_id == "orders"


def test_create_with_every_setting(acme: TenantCtx) -> None:
    """Every setting given is stored and echoed; the dead-letter queue is shown by name."""
    make_queue(tenant=acme.tenant, name="orders-dead")
    body = {
        "name": "orders",
        "visibility_timeout": 120,
        "delay_seconds": 5,
        "retention_seconds": 3600,
        "max_delivery_attempts": 4,
        "dead_letter_queue": "orders-dead",
        "retry_backoff": {"min_seconds": 2, "max_seconds": 60},
        "max_backlog_messages": 1000,
        "max_backlog_bytes": 1048576,
        "fair": True,
    }

    response = post_json(acme.client, "/v1/queues", body)

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == body
    row = queue_row(acme, "orders")
    assert (row.retry_backoff_min, row.retry_backoff_max) == (2, 60)
    assert row.dead_letter_queue is not None
    assert row.dead_letter_queue.name == "orders-dead"


def test_create_makes_the_stream(acme: TenantCtx) -> None:
    """A new queue has its Redis stream and consumer group at once."""
    post_json(acme.client, "/v1/queues", {"name": "orders"})

    assert get_redis().exists(stream_key(acme, "orders")) == 1


@pytest.mark.parametrize(
    "name",
    ["", "-orders", ".orders", "_orders", "a" * 129, "has space", "ördérs", "a/b", "orders\n", 7],
)
def test_create_rejects_bad_names(acme: TenantCtx, name: Any) -> None:
    """A name outside ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (or not a string) is a 400 naming
    the field, and nothing is created."""
    response = post_json(acme.client, "/v1/queues", {"name": name})

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"name"}
    assert queue_names(acme) == []


def test_longest_name_is_accepted(acme: TenantCtx) -> None:
    """128 characters of the allowed alphabet is a valid name."""
    name = "A1._-" + "x" * 123
    response = post_json(acme.client, "/v1/queues", {"name": name})

    assert response.status_code == 201, response.content
    assert queue_names(acme) == [name]


def test_create_requires_a_name(acme: TenantCtx) -> None:
    """A body without name is a 400 naming it."""
    body = assert_problem(post_json(acme.client, "/v1/queues", {}), 400, "invalid_request")
    assert field_errors(body) == {"name"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility_timeout", -1),
        ("visibility_timeout", 43201),
        ("visibility_timeout", "30"),
        ("visibility_timeout", 1.5),
        ("visibility_timeout", True),
        ("delay_seconds", -1),
        ("delay_seconds", 901),
        ("retention_seconds", 59),
        ("retention_seconds", 1209601),
        ("max_delivery_attempts", 0),
        ("max_delivery_attempts", 1001),
        ("retry_backoff", {"min_seconds": -1}),
        ("retry_backoff", {"max_seconds": 43201}),
        ("retry_backoff", {"min_seconds": 10, "max_seconds": 5}),
        ("retry_backoff", {"min_seconds": 1, "step": 2}),
        ("retry_backoff", [1, 2]),
    ],
)
def test_create_rejects_out_of_range_settings(acme: TenantCtx, field: str, value: Any) -> None:
    """A setting outside its range (or not an integer) is a 400 whose errors name the field,
    and nothing is created."""
    response = post_json(acme.client, "/v1/queues", {"name": "orders", field: value})

    body = assert_problem(response, 400, "invalid_request")
    assert {name.split(".")[0] for name in field_errors(body)} == {field}
    assert body["detail"].startswith(field)
    assert queue_names(acme) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visibility_timeout", 0),
        ("visibility_timeout", 43200),
        ("delay_seconds", 900),
        ("retention_seconds", 60),
        ("retention_seconds", 1209600),
        ("retry_backoff", {"min_seconds": 43200, "max_seconds": 43200}),
    ],
)
def test_create_accepts_range_limits(acme: TenantCtx, field: str, value: Any) -> None:
    """The ends of every range are accepted."""
    response = post_json(acme.client, "/v1/queues", {"name": "orders", field: value})

    assert response.status_code == 201, response.content
    assert response.json()[field] == value


def test_create_rejects_unknown_fields(acme: TenantCtx) -> None:
    """An unknown field is a 400 naming it, not silently ignored."""
    response = post_json(acme.client, "/v1/queues", {"name": "orders", "fifo": True})

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"fifo"}
    assert queue_names(acme) == []


@pytest.mark.parametrize("payload", [[{"name": "orders"}], "orders", None])
def test_create_rejects_a_body_that_is_not_an_object(acme: TenantCtx, payload: Any) -> None:
    """A JSON body that is not an object is a 400."""
    response = acme.client.post(
        "/v1/queues", data=orjson.dumps(payload), content_type="application/json"
    )

    assert_problem(response, 400, "invalid_request")
    assert queue_names(acme) == []


def test_dead_letter_queue_needs_max_delivery_attempts(acme: TenantCtx) -> None:
    """dead_letter_queue without max_delivery_attempts (or the reverse) is a 400."""
    make_queue(tenant=acme.tenant, name="dead")

    without_attempts = post_json(
        acme.client, "/v1/queues", {"name": "orders", "dead_letter_queue": "dead"}
    )
    without_queue = post_json(
        acme.client, "/v1/queues", {"name": "orders", "max_delivery_attempts": 3}
    )

    body = assert_problem(without_attempts, 400, "invalid_request")
    assert field_errors(body) == {"max_delivery_attempts"}
    assert_problem(without_queue, 400, "invalid_request")
    assert queue_names(acme) == ["dead"]


def test_dead_letter_queue_must_exist(acme: TenantCtx) -> None:
    """A dead-letter queue that does not exist in this tenant is a 400 naming the field."""
    response = post_json(
        acme.client,
        "/v1/queues",
        {"name": "orders", "dead_letter_queue": "nowhere", "max_delivery_attempts": 3},
    )

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"dead_letter_queue"}
    assert queue_names(acme) == []


def test_dead_letter_queue_of_another_tenant_is_unknown(acme: TenantCtx, globex: TenantCtx) -> None:
    """Naming another tenant's queue as dead-letter queue is the same 400 as a missing one."""
    make_queue(tenant=globex.tenant, name="dead")

    response = post_json(
        acme.client,
        "/v1/queues",
        {"name": "orders", "dead_letter_queue": "dead", "max_delivery_attempts": 3},
    )

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"dead_letter_queue"}
    assert queue_names(acme) == []


def test_queue_cannot_be_its_own_dead_letter_queue(acme: TenantCtx) -> None:
    """Setting a queue as its own dead-letter queue is a 400, and nothing changes."""
    make_queue(tenant=acme.tenant, name="orders")
    before = snapshot(acme)

    response = patch_json(
        acme.client,
        "/v1/queues/orders",
        {"dead_letter_queue": "orders", "max_delivery_attempts": 3},
    )

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"dead_letter_queue"}
    assert snapshot(acme) == before


def test_duplicate_name_is_a_conflict(acme: TenantCtx) -> None:
    """Creating a second queue with a taken name is 409 conflict, and the first is unchanged."""
    make_queue(tenant=acme.tenant, name="orders", visibility_timeout=10)
    before = snapshot(acme)

    response = post_json(acme.client, "/v1/queues", {"name": "orders", "visibility_timeout": 99})

    assert_problem(response, 409, "conflict")
    assert snapshot(acme) == before


def test_same_name_in_another_tenant_is_fine(acme: TenantCtx, globex: TenantCtx) -> None:
    """Names are unique per tenant only."""
    make_queue(tenant=globex.tenant, name="orders")

    response = post_json(acme.client, "/v1/queues", {"name": "orders"})

    assert response.status_code == 201
    assert queue_names(acme) == ["orders"]
    assert queue_names(globex) == ["orders"]


def test_quota_exceeded(acme: TenantCtx) -> None:
    """A tenant whose plan allows one queue gets 403 quota_exceeded for a second, and it is
    not created."""
    make_plan(tenant=acme.tenant, max_queues=1)
    make_queue(tenant=acme.tenant, name="first")

    response = post_json(acme.client, "/v1/queues", {"name": "second"})

    assert_problem(response, 403, "quota_exceeded")
    assert queue_names(acme) == ["first"]


# --- list and retrieve ----------------------------------------------------------------------


def test_list_is_paginated_by_name(acme: TenantCtx, globex: TenantCtx) -> None:
    """GET /v1/queues lists the tenant's queues in name order, limit at a time, following
    next until it is null; another tenant's queues never appear."""
    for name in ["c", "a", "e", "b", "d"]:
        make_queue(tenant=acme.tenant, name=name)
    make_queue(tenant=globex.tenant, name="aa")

    first = acme.client.get("/v1/queues?limit=2").json()
    second = acme.client.get(f"/v1/queues?limit=2&cursor={first['next']}").json()
    third = acme.client.get(f"/v1/queues?limit=2&cursor={second['next']}").json()

    assert [q["name"] for q in first["results"]] == ["a", "b"]
    assert [q["name"] for q in second["results"]] == ["c", "d"]
    assert [q["name"] for q in third["results"]] == ["e"]
    assert third["next"] is None
    assert untimed(first["results"][0]) == {"name": "a", **DEFAULTS}


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "cursor=%25%25"])
def test_list_rejects_bad_paging(acme: TenantCtx, query: str) -> None:
    """A limit outside 1..200 or a malformed cursor is a 400."""
    assert_problem(acme.client.get(f"/v1/queues?{query}"), 400, "invalid_request")


def test_retrieve_shows_settings_and_empty_stats(acme: TenantCtx) -> None:
    """GET /v1/queues/{queue} is the queue's settings plus zeroed stats when it is empty."""
    make_queue(tenant=acme.tenant, name="orders", visibility_timeout=45)

    response = acme.client.get("/v1/queues/orders")

    assert response.status_code == 200
    assert untimed(response.json()) == {
        "name": "orders",
        **DEFAULTS,
        "visibility_timeout": 45,
        "stats": EMPTY_STATS,
    }


def test_stats_count_available_in_flight_and_delayed(acme: TenantCtx) -> None:
    """After 3 ready and 2 delayed messages are published and 2 are leased, the stats say
    1 available, 2 in flight, 2 delayed."""
    make_queue(tenant=acme.tenant, name="orders")
    publish_to_queue(
        acme,
        "orders",
        {"body": 1},
        {"body": 2},
        {"body": 3},
        {"body": 4, "delay_seconds": 600},
        {"body": 5, "delay_seconds": 600},
    )
    assert bodies(pull(queue_reader(acme, "orders"), 2)) == [1, 2]

    stats = acme.client.get("/v1/queues/orders").json()["stats"]

    assert stats["available"] == 1
    assert stats["in_flight"] == 2
    assert stats["delayed"] == 2
    assert 0 <= stats["oldest_age_seconds"] <= 5


def test_stats_age_of_oldest_unacknowledged(acme: TenantCtx) -> None:
    """oldest_age_seconds is the age of the oldest message not yet acknowledged; acking
    everything brings the stats back to zero."""
    make_queue(tenant=acme.tenant, name="orders")
    publish_to_queue(acme, "orders", {"body": "a"}, {"body": "b"})
    reader = queue_reader(acme, "orders")
    ack(reader, pull(reader))

    assert acme.client.get("/v1/queues/orders").json()["stats"] == EMPTY_STATS


def test_unknown_queue_is_404(acme: TenantCtx) -> None:
    """A queue that does not exist is 404 not_found."""
    assert_problem(acme.client.get("/v1/queues/nope"), 404, "not_found")


# --- update ---------------------------------------------------------------------------------


def test_patch_changes_only_what_is_given(acme: TenantCtx) -> None:
    """PATCH changes the given settings and keeps the others; a partial retry_backoff keeps
    the other bound."""
    make_queue(
        tenant=acme.tenant,
        name="orders",
        delay_seconds=3,
        retry_backoff={"min_seconds": 1, "max_seconds": 9},
    )

    response = patch_json(
        acme.client,
        "/v1/queues/orders",
        {"visibility_timeout": 90, "retry_backoff": {"max_seconds": 30}},
    )

    assert response.status_code == 200, response.content
    expected = {
        "name": "orders",
        **DEFAULTS,
        "visibility_timeout": 90,
        "delay_seconds": 3,
        "retry_backoff": {"min_seconds": 1, "max_seconds": 30},
    }
    assert untimed(response.json()) == expected
    assert untimed(acme.client.get("/v1/queues/orders").json()) == {
        **expected,
        "stats": EMPTY_STATS,
    }


def test_patch_sets_and_clears_the_dead_letter_queue(acme: TenantCtx) -> None:
    """A dead-letter queue and attempts can be set together and cleared together."""
    make_queue(tenant=acme.tenant, name="dead")
    make_queue(tenant=acme.tenant, name="orders")

    set_ = patch_json(
        acme.client,
        "/v1/queues/orders",
        {"dead_letter_queue": "dead", "max_delivery_attempts": 5},
    )
    cleared = patch_json(
        acme.client,
        "/v1/queues/orders",
        {"dead_letter_queue": None, "max_delivery_attempts": None},
    )

    assert set_.status_code == 200
    assert set_.json()["dead_letter_queue"] == "dead"
    assert set_.json()["max_delivery_attempts"] == 5
    assert cleared.status_code == 200
    assert cleared.json()["dead_letter_queue"] is None
    assert cleared.json()["max_delivery_attempts"] is None


def test_patch_attempts_alone_keeps_the_dead_letter_queue(acme: TenantCtx) -> None:
    """Changing max_delivery_attempts alone keeps the dead-letter queue; clearing it alone
    while a dead-letter queue is set is a 400."""
    make_queue(tenant=acme.tenant, name="dead")
    make_queue(tenant=acme.tenant, name="orders", dead_letter_queue="dead", max_delivery_attempts=3)

    changed = patch_json(acme.client, "/v1/queues/orders", {"max_delivery_attempts": 7})
    cleared = patch_json(acme.client, "/v1/queues/orders", {"max_delivery_attempts": None})

    assert changed.json()["dead_letter_queue"] == "dead"
    assert changed.json()["max_delivery_attempts"] == 7
    assert_problem(cleared, 400, "invalid_request")
    assert queue_row(acme, "orders").max_delivery_attempts == 7


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "renamed"}, "name"),
        ({"fifo": True}, "fifo"),
        ({"visibility_timeout": 43201}, "visibility_timeout"),
        ({"delay_seconds": 901}, "delay_seconds"),
        ({"retention_seconds": 59}, "retention_seconds"),
        ({"retry_backoff": {"min_seconds": 700}}, "retry_backoff"),
    ],
)
def test_patch_rejects_bad_changes(acme: TenantCtx, payload: dict[str, Any], field: str) -> None:
    """Renaming, unknown fields and out-of-range values are a 400 naming the field, and the
    queue is unchanged."""
    make_queue(tenant=acme.tenant, name="orders")
    before = snapshot(acme)

    response = patch_json(acme.client, "/v1/queues/orders", payload)

    body = assert_problem(response, 400, "invalid_request")
    assert {name.split(".")[0] for name in field_errors(body)} == {field}
    assert snapshot(acme) == before


def test_create_fair_is_audited_and_reaches_the_engine(acme: TenantCtx) -> None:
    """fair: true is stored, in the audit event and in the queue document the data plane
    reads; the queue then serves a quiet group before a noisy one."""
    response = post_json(acme.client, "/v1/queues", {"name": "jobs", "fair": True})

    assert response.status_code == 201, response.content
    assert response.json()["fair"] is True
    assert queue_row(acme, "jobs").fair is True
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="queue.create")
    assert event.data == {"fair": True}
    assert selectors.queue_document(queue_row(acme, "jobs"))["fair"] is True
    assert queue_reader(acme, "jobs").fair is True


@pytest.mark.parametrize("value", ["true", 1, None, {}])
def test_create_rejects_a_fair_that_is_not_a_boolean(acme: TenantCtx, value: Any) -> None:
    response = post_json(acme.client, "/v1/queues", {"name": "jobs", "fair": value})

    body = assert_problem(response, 400, "invalid_request")
    assert set(field_errors(body)) == {"fair"}
    assert queue_names(acme) == []


def test_patch_switches_fair_mode_and_audits_it(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="jobs")
    assert queue_reader(acme, "jobs").fair is False

    response = patch_json(acme.client, "/v1/queues/jobs", {"fair": True})

    assert response.status_code == 200, response.content
    assert untimed(response.json()) == {"name": "jobs", **DEFAULTS, "fair": True}
    assert acme.client.get("/v1/queues/jobs").json()["fair"] is True
    assert queue_reader(acme, "jobs").fair is True
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="queue.update")
    assert event.data == {"fair": True}

    off = patch_json(acme.client, "/v1/queues/jobs", {"fair": False})
    assert off.status_code == 200, off.content
    assert queue_row(acme, "jobs").fair is False


def test_patch_rejects_a_fair_that_is_not_a_boolean(acme: TenantCtx) -> None:
    make_queue(tenant=acme.tenant, name="jobs", fair=True)
    before = snapshot(acme)

    response = patch_json(acme.client, "/v1/queues/jobs", {"fair": "no"})

    body = assert_problem(response, 400, "invalid_request")
    assert set(field_errors(body)) == {"fair"}
    assert snapshot(acme) == before
    assert queue_row(acme, "jobs").fair is True


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_queue_and_its_messages(
    acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    """DELETE answers 204 with no body; the row, its Redis stream and its messages are gone."""
    make_queue(tenant=acme.tenant, name="orders")
    publish_to_queue(acme, "orders", {"body": 1}, {"body": 2, "delay_seconds": 60})
    stream = stream_key(acme, "orders")
    assert get_redis().exists(stream) == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete("/v1/queues/orders")

    assert response.status_code == 204
    assert response.content == b""
    assert queue_names(acme) == []
    assert get_redis().exists(stream) == 0
    assert [k for k in get_redis().scan_iter() if b":q:" in k] == []
    assert_problem(acme.client.get("/v1/queues/orders"), 404, "not_found")


def test_deleting_a_dead_letter_queue_in_use_is_a_conflict(acme: TenantCtx) -> None:
    """A queue that is another's dead-letter queue cannot be deleted: 409, and it stays."""
    make_queue(tenant=acme.tenant, name="dead")
    make_queue(tenant=acme.tenant, name="orders", dead_letter_queue="dead", max_delivery_attempts=3)

    response = acme.client.delete("/v1/queues/dead")

    body = assert_problem(response, 409, "conflict")
    assert "orders" in body["detail"]
    assert queue_names(acme) == ["dead", "orders"]


# --- purge ----------------------------------------------------------------------------------


def test_purge_deletes_every_message(acme: TenantCtx) -> None:
    """Purge answers with the exact number of stored and delayed messages removed, leased
    ones included, and leaves the queue empty but usable."""
    make_queue(tenant=acme.tenant, name="orders")
    publish_to_queue(
        acme, "orders", {"body": 1}, {"body": 2}, {"body": 3}, {"body": 4, "delay_seconds": 60}
    )
    pull(queue_reader(acme, "orders"), 1)

    response = acme.client.post("/v1/queues/orders/purge")

    assert response.status_code == 200
    assert response.json() == {"purged": 4}
    assert acme.client.get("/v1/queues/orders").json()["stats"] == EMPTY_STATS
    assert pull(queue_reader(acme, "orders")) == []
    publish_to_queue(acme, "orders", {"body": "after"})
    assert bodies(pull(queue_reader(acme, "orders"))) == ["after"]


def test_purge_of_an_empty_queue(acme: TenantCtx) -> None:
    """Purging an empty queue removes nothing."""
    make_queue(tenant=acme.tenant, name="orders")

    assert acme.client.post("/v1/queues/orders/purge").json() == {"purged": 0}


# --- redrive --------------------------------------------------------------------------------


def dead_letter(acme: TenantCtx, count: int) -> None:
    """``count`` messages published to orders, delivered once and left to expire, so they
    move to the dead-letter queue dead (max_delivery_attempts 1)."""
    make_queue(tenant=acme.tenant, name="dead")
    make_queue(tenant=acme.tenant, name="orders", dead_letter_queue="dead", max_delivery_attempts=1)
    reader = queue_reader(acme, "orders")
    now = now_ms()
    publish_to_queue(
        acme, "orders", *({"body": n, "attributes": {"n": str(n)}} for n in range(count)), now=now
    )
    assert len(pull(reader, now=now)) == count
    # the leases expire: the next pull moves the messages to the dead-letter queue
    assert pull(reader, now=now + reader.visibility_ms + 1) == []


def test_redrive_moves_dead_letters_back_to_their_source(acme: TenantCtx) -> None:
    """Dead letters redriven without a target go back to their source queue without the
    op-* attributes, as new deliveries (attempt 1); the dead-letter queue is left empty."""
    dead_letter(acme, 3)
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 3

    response = post_json(acme.client, "/v1/queues/dead/redrive", {})

    assert response.status_code == 200, response.content
    assert response.json() == {"moved": 3, "skipped": 0}
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 0
    back = pull(queue_reader(acme, "orders"))
    assert bodies(back) == [0, 1, 2]
    assert [m["delivery_attempt"] for m in back] == [1, 1, 1]
    assert [orjson.loads(orjson.dumps(m["attributes"])) for m in back] == [
        {"n": "0"},
        {"n": "1"},
        {"n": "2"},
    ]


def test_redrive_to_another_queue_with_a_limit(acme: TenantCtx) -> None:
    """With "to" and max_messages, exactly that many oldest dead letters move to that queue."""
    dead_letter(acme, 3)
    make_queue(tenant=acme.tenant, name="retry")

    response = post_json(acme.client, "/v1/queues/dead/redrive", {"to": "retry", "max_messages": 2})

    assert response.json() == {"moved": 2, "skipped": 0}
    assert bodies(pull(queue_reader(acme, "retry"))) == [0, 1]
    assert pull(queue_reader(acme, "orders")) == []
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"to": "nowhere"}, "to"),
        ({"to": "dead"}, "to"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": "5"}, "max_messages"),
        ({"limit": 5}, "limit"),
    ],
)
def test_redrive_rejects_bad_requests(acme: TenantCtx, payload: dict[str, Any], field: str) -> None:
    """An unknown target, the queue itself as target, a bad max_messages or an unknown field
    is a 400 naming the field, and nothing moves."""
    dead_letter(acme, 2)

    response = post_json(acme.client, "/v1/queues/dead/redrive", payload)

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {field}
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 2


def test_redrive_into_another_tenants_queue_is_unknown(acme: TenantCtx, globex: TenantCtx) -> None:
    """A redrive target that only another tenant has is the same 400 as a missing one, and
    nothing moves anywhere."""
    dead_letter(acme, 2)
    make_queue(tenant=globex.tenant, name="retry")

    response = post_json(acme.client, "/v1/queues/dead/redrive", {"to": "retry"})

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {"to"}
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 2
    assert globex.client.get("/v1/queues/retry").json()["stats"] == EMPTY_STATS


def test_redrive_skips_sources_the_key_does_not_cover(acme: TenantCtx) -> None:
    """A key limited to queue:dead can redrive it, but dead letters whose source it does
    not cover stay where they are and count as skipped."""
    dead_letter(acme, 2)
    limited = api_client(make_key(tenant=acme.tenant, scopes=["manage"], resources=["queue:dead"]))

    response = post_json(limited, "/v1/queues/dead/redrive", {})

    assert response.json() == {"moved": 0, "skipped": 2}
    assert acme.client.get("/v1/queues/dead").json()["stats"]["available"] == 2
    assert pull(queue_reader(acme, "orders")) == []


# --- peek -----------------------------------------------------------------------------------


def test_peek_shows_messages_without_leasing(acme: TenantCtx) -> None:
    """GET /v1/queues/{queue}/messages shows the stored messages in order with their state;
    it leases nothing, so a pull afterwards gets them all as first deliveries."""
    make_queue(tenant=acme.tenant, name="orders")
    published = publish_to_queue(
        acme, "orders", {"body": {"n": 1}, "attributes": {"a": "b"}, "key": "k1"}, {"body": 2}
    )

    response = acme.client.get("/v1/queues/orders/messages")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next"] is None
    first, second = body["messages"]
    assert first["id"] == published[0]["id"]
    assert first["body"] == {"n": 1}
    assert first["attributes"] == {"a": "b"}
    assert first["key"] == "k1"
    assert first["offset"] == published[0]["offset"]
    assert first["partition"] == 0
    assert first["state"] == "available"
    assert first["delivery_attempts"] == 0
    assert "ack_id" not in first
    assert second["body"] == 2
    pulled = pull(queue_reader(acme, "orders"))
    assert bodies(pulled) == [{"n": 1}, 2]
    assert [m["delivery_attempt"] for m in pulled] == [1, 1]


def test_peek_pages_with_after_and_shows_leases(acme: TenantCtx) -> None:
    """limit and after page through the stored messages; a leased message shows in_flight."""
    make_queue(tenant=acme.tenant, name="orders")
    publish_to_queue(acme, "orders", *({"body": n} for n in range(5)))
    pull(queue_reader(acme, "orders"), 1)

    first = acme.client.get("/v1/queues/orders/messages?limit=2").json()
    second = acme.client.get(f"/v1/queues/orders/messages?limit=2&after={first['next']}").json()
    third = acme.client.get(f"/v1/queues/orders/messages?limit=2&after={second['next']}").json()

    assert [m["body"] for m in first["messages"]] == [0, 1]
    assert [m["state"] for m in first["messages"]] == ["in_flight", "available"]
    assert first["messages"][0]["delivery_attempts"] == 1
    assert first["next"] == first["messages"][1]["offset"]
    assert [m["body"] for m in second["messages"]] == [2, 3]
    assert [m["body"] for m in third["messages"]] == [4]
    assert third["next"] is None


@pytest.mark.parametrize(
    ("query", "field"), [("limit=0", "limit"), ("limit=101", "limit"), ("after=abc", "after")]
)
def test_peek_rejects_bad_parameters(acme: TenantCtx, query: str, field: str) -> None:
    """limit outside 1..100 or an after that is not an offset is a 400 naming it."""
    make_queue(tenant=acme.tenant, name="orders")

    body = assert_problem(
        acme.client.get(f"/v1/queues/orders/messages?{query}"), 400, "invalid_request"
    )
    assert field_errors(body) == {field}


def test_peek_needs_the_consume_scope(acme: TenantCtx) -> None:
    """Peeking reads messages: a key without consume gets 403."""
    make_queue(tenant=acme.tenant, name="orders")
    publisher = api_client(make_key(tenant=acme.tenant, scopes=["publish", "manage"]))

    assert_problem(publisher.get("/v1/queues/orders/messages"), 403, "forbidden")
    consumer = api_client(make_key(tenant=acme.tenant, scopes=["consume"]))
    assert consumer.get("/v1/queues/orders/messages").status_code == 200


# --- scopes and resource patterns ------------------------------------------------------------


def test_key_without_manage_cannot_change_queues(acme: TenantCtx) -> None:
    """A key with only publish and consume gets 403 forbidden on create, patch, delete,
    purge and redrive, and nothing is created, changed, deleted or purged; it may read."""
    make_queue(tenant=acme.tenant, name="orders")
    make_queue(tenant=acme.tenant, name="other")
    publish_to_queue(acme, "orders", {"body": 1})
    before = snapshot(acme)
    worker = api_client(make_key(tenant=acme.tenant, scopes=["publish", "consume"]))

    assert_problem(post_json(worker, "/v1/queues", {"name": "new"}), 403, "forbidden")
    assert_problem(
        patch_json(worker, "/v1/queues/orders", {"visibility_timeout": 5}), 403, "forbidden"
    )
    assert_problem(worker.delete("/v1/queues/orders"), 403, "forbidden")
    assert_problem(worker.post("/v1/queues/orders/purge"), 403, "forbidden")
    assert_problem(post_json(worker, "/v1/queues/orders/redrive", {}), 403, "forbidden")

    assert snapshot(acme) == before
    assert worker.get("/v1/queues/orders").json()["stats"]["available"] == 1
    assert [q["name"] for q in worker.get("/v1/queues").json()["results"]] == ["orders", "other"]


def test_resource_limited_key(acme: TenantCtx) -> None:
    """A key limited to queue:orders sees only orders in the list, gets 403 on queue other
    and on creating other (which is not created), and may still manage orders."""
    make_queue(tenant=acme.tenant, name="orders")
    make_queue(tenant=acme.tenant, name="other")
    before = snapshot(acme)
    limited = api_client(
        make_key(
            tenant=acme.tenant, scopes=["publish", "consume", "manage"], resources=["queue:orders"]
        )
    )

    listed = limited.get("/v1/queues").json()

    assert [q["name"] for q in listed["results"]] == ["orders"]
    assert listed["next"] is None
    assert_problem(limited.get("/v1/queues/other"), 403, "forbidden")
    assert_problem(
        patch_json(limited, "/v1/queues/other", {"visibility_timeout": 5}), 403, "forbidden"
    )
    assert_problem(limited.delete("/v1/queues/other"), 403, "forbidden")
    assert_problem(limited.post("/v1/queues/other/purge"), 403, "forbidden")
    assert_problem(post_json(limited, "/v1/queues", {"name": "other2"}), 403, "forbidden")
    assert snapshot(acme) == before
    assert limited.get("/v1/queues/orders").status_code == 200
    assert patch_json(limited, "/v1/queues/orders", {"delay_seconds": 1}).status_code == 200


def test_resource_limited_key_cannot_point_at_uncovered_queues(acme: TenantCtx) -> None:
    """A key limited to queue:orders* cannot make an uncovered queue a dead-letter queue or
    redrive into one: 403, and nothing changes."""
    make_queue(tenant=acme.tenant, name="dead")
    make_queue(tenant=acme.tenant, name="orders-dead")
    make_queue(
        tenant=acme.tenant, name="orders", dead_letter_queue="orders-dead", max_delivery_attempts=1
    )
    before = snapshot(acme)
    limited = api_client(
        make_key(tenant=acme.tenant, scopes=["manage"], resources=["queue:orders*"])
    )

    assert_problem(
        patch_json(
            limited,
            "/v1/queues/orders",
            {"dead_letter_queue": "dead", "max_delivery_attempts": 2},
        ),
        403,
        "forbidden",
    )
    assert_problem(
        post_json(
            limited,
            "/v1/queues",
            {"name": "orders2", "dead_letter_queue": "dead", "max_delivery_attempts": 2},
        ),
        403,
        "forbidden",
    )
    assert_problem(
        post_json(limited, "/v1/queues/orders-dead/redrive", {"to": "dead"}), 403, "forbidden"
    )
    assert snapshot(acme) == before


def test_pattern_keys_list_what_they_cover(acme: TenantCtx) -> None:
    """Glob patterns select the listed queues, and paging works over what is visible."""
    for name in ["orders.eu", "orders.us", "billing", "orders.asia"]:
        make_queue(tenant=acme.tenant, name=name)
    limited = api_client(
        make_key(tenant=acme.tenant, scopes=["consume"], resources=["queue:orders.*"])
    )

    first = limited.get("/v1/queues?limit=2").json()
    second = limited.get(f"/v1/queues?limit=2&cursor={first['next']}").json()

    assert [q["name"] for q in first["results"]] == ["orders.asia", "orders.eu"]
    assert [q["name"] for q in second["results"]] == ["orders.us"]
    assert second["next"] is None


def test_unauthenticated(acme: TenantCtx) -> None:
    """Without an API key every queue endpoint is 401."""
    make_queue(tenant=acme.tenant, name="orders")
    anonymous = Client()

    assert_problem(anonymous.get("/v1/queues"), 401, "unauthenticated")
    assert_problem(anonymous.get("/v1/queues/orders"), 401, "unauthenticated")
    assert_problem(post_json(anonymous, "/v1/queues", {"name": "x"}), 401, "unauthenticated")
    assert queue_names(acme) == ["orders"]


# --- tenant isolation ----------------------------------------------------------------------


CROSS_TENANT = [
    ("get", "/v1/queues/orders", None),
    ("patch", "/v1/queues/orders", {"visibility_timeout": 5}),
    ("delete", "/v1/queues/orders", None),
    ("post", "/v1/queues/orders/purge", None),
    ("post", "/v1/queues/orders/redrive", {}),
    ("post", "/v1/queues/orders-dead/redrive", {"to": "orders"}),
    ("get", "/v1/queues/orders/messages", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), CROSS_TENANT)
def test_another_tenants_queue_is_not_found(
    acme: TenantCtx,
    globex: TenantCtx,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Globex's key gets 404 not_found on each of acme's queue endpoints, even with acme's
    exact names, and acme's queues and messages are untouched."""
    make_queue(tenant=acme.tenant, name="orders-dead")
    make_queue(
        tenant=acme.tenant, name="orders", dead_letter_queue="orders-dead", max_delivery_attempts=1
    )
    publish_to_queue(acme, "orders", {"body": 1})
    before = snapshot(acme)

    with django_capture_on_commit_callbacks(execute=True):
        call = getattr(globex.client, method)
        if payload is None:
            response = call(path)
        else:
            response = call(path, data=orjson.dumps(payload), content_type="application/json")

    assert_problem(response, 404, "not_found")
    assert snapshot(acme) == before
    assert acme.client.get("/v1/queues/orders").json()["stats"]["available"] == 1
    assert get_redis().exists(stream_key(acme, "orders")) == 1


def test_another_tenants_queues_are_not_listed(acme: TenantCtx, globex: TenantCtx) -> None:
    """GET /v1/queues shows only the caller's queues."""
    make_queue(tenant=acme.tenant, name="orders")

    assert globex.client.get("/v1/queues").json() == {"results": [], "next": None}


def test_not_found_beats_forbidden(acme: TenantCtx, globex: TenantCtx) -> None:
    """A resource-limited key asking for a queue its tenant does not have gets 404, not 403,
    so patterns reveal nothing about other tenants' names."""
    make_queue(tenant=globex.tenant, name="secret")
    limited = api_client(
        make_key(tenant=acme.tenant, scopes=["manage"], resources=["queue:orders"])
    )

    assert_problem(limited.get("/v1/queues/secret"), 404, "not_found")
    assert_problem(limited.delete("/v1/queues/secret"), 404, "not_found")
