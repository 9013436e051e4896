"""/v1/topics: create, list, retrieve, change the retention, delete, and read the retained
log by offset; validation, quotas, scopes, resource patterns and tenant isolation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kernel.redis_client import get_redis
from queues.engine.dataplane import partition_for
from queues.engine.targets import subscription_group, topic_partition_keys
from queues.models import Subscription, Topic
from tenants.models import AuditEvent
from tests.engine import publish_to_topic
from tests.factories import (
    TenantCtx,
    api_client,
    make_key,
    make_plan,
    make_subscription,
    make_topic,
)
from tests.helpers import assert_problem, field_errors, patch_json, post_json, untimed

pytestmark = pytest.mark.django_db


def topic_names(ctx: TenantCtx) -> list[str]:
    return sorted(Topic.objects.for_tenant(ctx.tenant).values_list("name", flat=True))


def snapshot(ctx: TenantCtx) -> list[tuple[Any, ...]]:
    return list(
        Topic.objects.for_tenant(ctx.tenant)
        .order_by("name")
        .values_list("name", "partitions", "retention_seconds", "updated_at")
    )


def log_keys(ctx: TenantCtx, name: str) -> list[str]:
    topic = Topic.objects.for_tenant(ctx.tenant).get(name=name)
    return [
        topic_partition_keys(str(ctx.tenant.id), str(topic.id), p)["stream"]
        for p in range(topic.partitions)
    ]


# --- create, list, retrieve ------------------------------------------------------------------


def test_create_with_defaults(acme: TenantCtx) -> None:
    """POST with a name answers 201 with one partition and seven days' retention."""
    response = post_json(acme.client, "/v1/topics", {"name": "events"})

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == {
        "name": "events",
        "partitions": 1,
        "retention_seconds": 604800,
        "max_backlog_messages": None,
        "max_backlog_bytes": None,
    }
    assert topic_names(acme) == ["events"]
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="topic.create").count() == 1


def test_create_with_settings(acme: TenantCtx) -> None:
    """Partitions and retention given are stored and echoed."""
    body = {
        "name": "events.eu",
        "partitions": 64,
        "retention_seconds": 60,
        "max_backlog_messages": 500,
        "max_backlog_bytes": None,
    }

    response = post_json(acme.client, "/v1/topics", body)

    assert response.status_code == 201, response.content
    assert untimed(response.json()) == body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "-events"),
        ("name", "a" * 129),
        ("name", "ev ents"),
        ("partitions", 0),
        ("partitions", 65),
        ("partitions", "2"),
        ("retention_seconds", 59),
        ("retention_seconds", 1209601),
        ("ordering", "strict"),
    ],
)
def test_create_rejects_bad_fields(acme: TenantCtx, field: str, value: Any) -> None:
    """A bad name, an out-of-range setting or an unknown field is a 400 naming the field,
    and no topic is created."""
    response = post_json(acme.client, "/v1/topics", {"name": "events", field: value})

    body = assert_problem(response, 400, "invalid_request")
    assert field_errors(body) == {field}
    assert topic_names(acme) == []


def test_duplicate_name_is_a_conflict(acme: TenantCtx) -> None:
    """A taken name is 409 conflict and the existing topic is unchanged."""
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    before = snapshot(acme)

    response = post_json(acme.client, "/v1/topics", {"name": "events", "partitions": 8})

    assert_problem(response, 409, "conflict")
    assert snapshot(acme) == before


def test_quota_exceeded(acme: TenantCtx) -> None:
    """A plan that allows one topic answers 403 quota_exceeded for a second."""
    make_plan(tenant=acme.tenant, max_topics=1)
    make_topic(tenant=acme.tenant, name="first")

    assert_problem(post_json(acme.client, "/v1/topics", {"name": "second"}), 403, "quota_exceeded")
    assert topic_names(acme) == ["first"]


def test_list_and_retrieve(acme: TenantCtx, globex: TenantCtx) -> None:
    """The list is the tenant's topics in name order, paginated; GET by name is one topic."""
    for name in ["b", "c", "a"]:
        make_topic(tenant=acme.tenant, name=name, partitions=3)
    make_topic(tenant=globex.tenant, name="a0")

    first = acme.client.get("/v1/topics?limit=2").json()
    second = acme.client.get(f"/v1/topics?limit=2&cursor={first['next']}").json()
    one = acme.client.get("/v1/topics/c")

    assert [t["name"] for t in first["results"]] == ["a", "b"]
    assert [t["name"] for t in second["results"]] == ["c"]
    assert second["next"] is None
    assert one.status_code == 200
    assert untimed(one.json()) == {
        "name": "c",
        "partitions": 3,
        "retention_seconds": 604800,
        "max_backlog_messages": None,
        "max_backlog_bytes": None,
    }
    assert_problem(acme.client.get("/v1/topics/a0"), 404, "not_found")


# --- update and delete ---------------------------------------------------------------------


def test_patch_changes_the_retention(acme: TenantCtx) -> None:
    """PATCH retention_seconds changes it and nothing else."""
    make_topic(tenant=acme.tenant, name="events", partitions=4)

    response = patch_json(acme.client, "/v1/topics/events", {"retention_seconds": 3600})

    assert response.status_code == 200, response.content
    assert untimed(response.json()) == {
        "name": "events",
        "partitions": 4,
        "retention_seconds": 3600,
        "max_backlog_messages": None,
        "max_backlog_bytes": None,
    }
    assert Topic.objects.for_tenant(acme.tenant).get(name="events").retention_seconds == 3600


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"partitions": 8}, "partitions"),
        ({"name": "renamed"}, "name"),
        ({"retention_seconds": 59}, "retention_seconds"),
        ({"retention_seconds": None}, "retention_seconds"),
        ({"compacted": True}, "compacted"),
    ],
)
def test_patch_rejects_other_changes(acme: TenantCtx, payload: dict[str, Any], field: str) -> None:
    """Partitions and name cannot change, and the retention keeps its range: 400 naming the
    field, topic unchanged."""
    make_topic(tenant=acme.tenant, name="events")
    before = snapshot(acme)

    body = assert_problem(
        patch_json(acme.client, "/v1/topics/events", payload), 400, "invalid_request"
    )
    assert field_errors(body) == {field}
    assert snapshot(acme) == before


def test_delete_removes_the_topic_its_subscriptions_and_messages(
    acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    """DELETE answers 204; the topic, its subscriptions, its log and their consumer groups
    are gone."""
    make_topic(tenant=acme.tenant, name="events", partitions=2)
    make_topic(tenant=acme.tenant, name="other")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    make_subscription(tenant=acme.tenant, name="billing", topic="events")
    make_subscription(tenant=acme.tenant, name="kept", topic="other")
    publish_to_topic(acme, "events", {"body": 1, "key": "a"}, {"body": 2, "key": "b"})
    streams_ = log_keys(acme, "events")

    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client.delete("/v1/topics/events")

    assert response.status_code == 204
    assert response.content == b""
    assert topic_names(acme) == ["other"]
    assert list(Subscription.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == [
        "kept"
    ]
    assert get_redis().exists(*streams_) == 0
    assert_problem(acme.client.get("/v1/subscriptions/audit"), 404, "not_found")
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="topic.delete")
    assert event.data == {"subscriptions": ["audit", "billing"]}


# --- the log -------------------------------------------------------------------------------


def test_log_read_in_order_with_after_and_next(acme: TenantCtx) -> None:
    """GET /v1/topics/{topic}/messages reads the retained log in publish order, limit at a
    time; next is the offset to pass as after, and null once a page reaches the end."""
    make_topic(tenant=acme.tenant, name="events")
    published = publish_to_topic(acme, "events", *({"body": n} for n in range(5)))

    first = acme.client.get("/v1/topics/events/messages?limit=2").json()
    second = acme.client.get(f"/v1/topics/events/messages?limit=2&after={first['next']}").json()
    third = acme.client.get(f"/v1/topics/events/messages?limit=2&after={second['next']}").json()

    assert [m["body"] for m in first["messages"]] == [0, 1]
    assert [m["body"] for m in second["messages"]] == [2, 3]
    assert [m["body"] for m in third["messages"]] == [4]
    assert first["next"] == published[1]["offset"]
    assert second["next"] == published[3]["offset"]
    assert third["next"] is None
    every = first["messages"] + second["messages"] + third["messages"]
    assert [m["id"] for m in every] == [p["id"] for p in published]
    assert [m["offset"] for m in every] == [p["offset"] for p in published]
    assert all("ack_id" not in m and "delivery_attempt" not in m for m in every)


def test_log_read_shows_every_field(acme: TenantCtx) -> None:
    """A log entry carries id, body (or body_base64), attributes, key, publish_time,
    partition and offset."""
    make_topic(tenant=acme.tenant, name="events")
    [sent] = publish_to_topic(
        acme, "events", {"body": {"a": [1, 2]}, "attributes": {"type": "x"}, "key": "k"}
    )
    publish_to_topic(acme, "events", {"body_base64": "AAEC"})

    text, binary = acme.client.get("/v1/topics/events/messages").json()["messages"]

    assert set(text) == {
        "id",
        "body",
        "attributes",
        "key",
        "publish_time",
        "partition",
        "offset",
    }
    assert text["id"] == sent["id"]
    assert text["body"] == {"a": [1, 2]}
    assert text["attributes"] == {"type": "x"}
    assert text["key"] == "k"
    assert text["publish_time"].endswith("Z")
    assert (text["partition"], text["offset"]) == (0, sent["offset"])
    assert binary["body_base64"] == "AAEC"
    assert "body" not in binary
    assert binary["attributes"] == {}
    assert binary["key"] is None


def test_log_read_per_partition(acme: TenantCtx) -> None:
    """Each partition has its own log; a keyed message is in the partition of its key."""
    make_topic(tenant=acme.tenant, name="events", partitions=4)
    keys = ["k0", "k1", "k2", "k3", "k4", "k5"]
    publish_to_topic(acme, "events", *({"body": k, "key": k} for k in keys))

    seen: dict[int, list[str]] = {}
    for p in range(4):
        body = acme.client.get(f"/v1/topics/events/messages?partition={p}").json()
        seen[p] = [m["body"] for m in body["messages"]]
        assert all(m["partition"] == p for m in body["messages"])

    assert seen == {p: [k for k in keys if partition_for(k, 4) == p] for p in range(4)}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("partition=2", "partition"),
        ("partition=-1", "partition"),
        ("partition=x", "partition"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=12", "after"),
        ("after=1-2-3", "after"),
    ],
)
def test_log_read_rejects_bad_parameters(acme: TenantCtx, query: str, field: str) -> None:
    """A partition out of range, a limit outside 1..1000 or a malformed offset is a 400
    naming the parameter."""
    make_topic(tenant=acme.tenant, name="events", partitions=2)

    body = assert_problem(
        acme.client.get(f"/v1/topics/events/messages?{query}"), 400, "invalid_request"
    )
    assert field_errors(body) == {field}


def test_log_read_does_not_disturb_subscriptions(acme: TenantCtx) -> None:
    """Reading the log moves no subscription: the consumer group's position is unchanged."""
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    [stream] = log_keys(acme, "events")
    sub = Subscription.objects.for_tenant(acme.tenant).get(name="audit")
    before = get_redis().xinfo_groups(stream)

    assert len(acme.client.get("/v1/topics/events/messages").json()["messages"]) == 1

    assert get_redis().xinfo_groups(stream) == before
    assert before[0]["name"].decode() == subscription_group(str(sub.id))


def test_log_read_needs_the_consume_scope(acme: TenantCtx) -> None:
    """Reading the log is consuming: a key without consume gets 403."""
    make_topic(tenant=acme.tenant, name="events")

    publisher = api_client(make_key(tenant=acme.tenant, scopes=["publish", "manage"]))
    assert_problem(publisher.get("/v1/topics/events/messages"), 403, "forbidden")
    consumer = api_client(make_key(tenant=acme.tenant, scopes=["consume"]))
    assert consumer.get("/v1/topics/events/messages").status_code == 200


# --- scopes, patterns, isolation -----------------------------------------------------------


def test_key_without_manage_cannot_change_topics(acme: TenantCtx) -> None:
    """A publish/consume key gets 403 on create, patch and delete, and nothing changes; it
    may read the metadata."""
    make_topic(tenant=acme.tenant, name="events")
    before = snapshot(acme)
    worker = api_client(make_key(tenant=acme.tenant, scopes=["publish", "consume"]))

    assert_problem(post_json(worker, "/v1/topics", {"name": "new"}), 403, "forbidden")
    assert_problem(
        patch_json(worker, "/v1/topics/events", {"retention_seconds": 60}), 403, "forbidden"
    )
    assert_problem(worker.delete("/v1/topics/events"), 403, "forbidden")
    assert snapshot(acme) == before
    assert worker.get("/v1/topics/events").status_code == 200


def test_resource_limited_key(acme: TenantCtx) -> None:
    """A key limited to topic:events.* lists and reaches only those topics: 403 on others,
    on their log and on creating one outside its patterns."""
    make_topic(tenant=acme.tenant, name="events.eu")
    make_topic(tenant=acme.tenant, name="billing")
    before = snapshot(acme)
    limited = api_client(
        make_key(tenant=acme.tenant, scopes=["consume", "manage"], resources=["topic:events.*"])
    )

    assert [t["name"] for t in limited.get("/v1/topics").json()["results"]] == ["events.eu"]
    assert_problem(limited.get("/v1/topics/billing"), 403, "forbidden")
    assert_problem(limited.get("/v1/topics/billing/messages"), 403, "forbidden")
    assert_problem(limited.delete("/v1/topics/billing"), 403, "forbidden")
    assert_problem(post_json(limited, "/v1/topics", {"name": "audit"}), 403, "forbidden")
    assert snapshot(acme) == before
    assert post_json(limited, "/v1/topics", {"name": "events.us"}).status_code == 201


CROSS_TENANT = [
    ("get", "/v1/topics/events", None),
    ("patch", "/v1/topics/events", {"retention_seconds": 60}),
    ("delete", "/v1/topics/events", None),
    ("get", "/v1/topics/events/messages", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), CROSS_TENANT)
def test_another_tenants_topic_is_not_found(
    acme: TenantCtx,
    globex: TenantCtx,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Globex's key gets 404 not_found on each of acme's topic endpoints, and acme's topic,
    subscriptions and log are untouched."""
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_topic(acme, "events", {"body": 1})
    before = snapshot(acme)

    with django_capture_on_commit_callbacks(execute=True):
        call = getattr(globex.client, method)
        if payload is None:
            response = call(path)
        else:
            response = call(path, data=orjson.dumps(payload), content_type="application/json")

    assert_problem(response, 404, "not_found")
    assert snapshot(acme) == before
    assert Subscription.objects.for_tenant(acme.tenant).count() == 1
    assert get_redis().xlen(log_keys(acme, "events")[0]) == 1
    assert globex.client.get("/v1/topics").json() == {"results": [], "next": None}
