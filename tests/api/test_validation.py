"""Inputs that once made the API answer 500 (found by fuzzing the live schema), and the strict
validation the contract asks for: each is a 400 invalid_request naming the field (or a 404),
always problem+json, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client

from kernel.redis_client import get_redis
from openplatform.asgi import application
from queues.models import Queue, Subscription, Topic
from tests.engine import publish_to_queue, publish_to_topic, pull, queue_reader, subscription_reader
from tests.factories import (
    TenantCtx,
    api_headers,
    make_queue,
    make_subscription,
    make_tenant,
    make_topic,
)
from tests.helpers import assert_problem, field_errors, patch_json, post_json

pytestmark = pytest.mark.django_db

BAD_ACK_IDS = [
    "0.99999999999999999999-1.1",  # ms beyond a stream id's 64 bits
    "0.1-18446744073709551616.1",  # seq = 2**64
    "0.\u0661-1.1",  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes
    "0.1-\u0661.1",
    "\u0660.1-1.1",  # a Unicode digit as the partition (int() takes it)
    "0.1-1.\u0661",  # ... and as the attempt
    "0.1-1.1 ",
    "0.+1-1.1",
    "0.1-1.0",
    "-0.1-1.1",
    "0.1-1",
    "",
]
BAD_OFFSETS = ["99999999999999999999-1", "1-18446744073709551616", "\u0661-1", "1-\u0661", "1", "-"]


@pytest.fixture
def leased(acme: TenantCtx) -> dict[str, Any]:
    """Queue 'orders' and subscription 'audit' (on topic 'events'), each with one message
    leased to a consumer; the state of both, to show that a rejected request changed nothing."""
    make_queue(tenant=acme.tenant, name="orders")
    make_topic(tenant=acme.tenant, name="events")
    make_subscription(tenant=acme.tenant, name="audit", topic="events")
    publish_to_queue(acme, "orders", {"body": 1})
    publish_to_topic(acme, "events", {"body": 2})
    (queued,) = pull(queue_reader(acme, "orders"))
    (sub,) = pull(subscription_reader(acme, "audit"))
    return {"queue": queued, "subscription": sub}


def redis_state() -> dict[bytes, Any]:
    """Every message structure (stream, leases, delays, retries, usage counters) with its
    value; not the hot cache, which a request fills, nor keys' last use."""
    client = get_redis()
    keys = [key for key in client.keys("op:*") if not key.startswith((b"op:cache:", b"op:keys:"))]
    return {key: client.dump(key) for key in sorted(keys)}


def rows(ctx: TenantCtx) -> list[Any]:
    return [
        list(model.objects.for_tenant(ctx.tenant).order_by("pk").values())
        for model in (Queue, Topic, Subscription)
    ]


@pytest.mark.parametrize("ack_id", BAD_ACK_IDS)
@pytest.mark.parametrize("verb", ["ack", "nack", "modify-deadline"])
@pytest.mark.parametrize("path", ["/v1/queues/orders", "/v1/subscriptions/audit"])
def test_malformed_ack_id_is_400_and_settles_nothing(
    acme: TenantCtx, leased: dict[str, Any], path: str, verb: str, ack_id: str
) -> None:
    """An ack id that is not ASCII <partition>.<ms>-<seq>.<attempt> within a stream id's range
    is a 400 naming its index; the good ack id sent with it is not settled either."""
    good = leased["queue" if "queues" in path else "subscription"]["ack_id"]
    body: dict[str, Any] = {"ack_ids": [good, ack_id]}
    if verb == "modify-deadline":
        body["seconds"] = 0
    before = redis_state()

    response = post_json(acme.client, f"{path}/{verb}", body)

    problem = assert_problem(response, 400, "invalid_request")
    assert problem["errors"] == [
        {"index": 1, "field": "ack_ids", "detail": "Not an ack id of this queue or subscription."}
    ]
    assert redis_state() == before


def test_ack_id_at_the_top_of_the_stream_id_range_is_well_formed(
    acme: TenantCtx, leased: dict[str, Any]
) -> None:
    """ms and seq up to 2**64 - 1 make a stream id Redis takes: such an ack id is well formed,
    and as it names no pending message it settles nothing and is not stale either."""
    top = "0.18446744073709551615-18446744073709551615.1"

    response = post_json(acme.client, "/v1/queues/orders/ack", {"ack_ids": [top]})

    assert response.status_code == 200, response.content
    assert response.json() == {"acked": 0, "stale": []}


@pytest.mark.parametrize("after", BAD_OFFSETS)
@pytest.mark.parametrize("path", ["/v1/queues/orders/messages", "/v1/topics/events/messages"])
def test_malformed_after_offset_is_400(
    acme: TenantCtx, leased: dict[str, Any], path: str, after: str
) -> None:
    """``after`` is an ASCII <ms>-<seq> stream offset within 64 bits, or a 400 naming it."""
    response = acme.client.get(path, {"after": after})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {"after"}


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        ("/v1/queues/orders/messages", "limit", ""),
        ("/v1/queues/orders/messages", "limit", "101"),
        ("/v1/queues/orders/messages", "limit", "1.0"),
        ("/v1/queues/orders/messages", "limit", "\u0661"),
        ("/v1/queues/orders/messages", "after", ""),
        ("/v1/topics/events/messages", "limit", " 1"),
        ("/v1/topics/events/messages", "limit", "1001"),
        ("/v1/topics/events/messages", "partition", ""),
        ("/v1/topics/events/messages", "partition", "-1"),
        ("/v1/topics/events/messages", "partition", "64"),
        ("/v1/topics/events/messages", "partition", "1_0"),
    ],
)
def test_peek_and_log_parameters_are_strict(
    acme: TenantCtx, leased: dict[str, Any], path: str, parameter: str, value: str
) -> None:
    """ASCII integers in range, offsets as above; an empty value is not an absent one."""
    response = acme.client.get(path, {parameter: value})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {parameter}


@pytest.mark.parametrize("path", ["/v1/queues/orders/messages", "/v1/topics/events/messages"])
def test_after_the_last_stream_id_is_an_empty_page(
    acme: TenantCtx, leased: dict[str, Any], path: str
) -> None:
    """Nothing follows 2**64-1 - 2**64-1 (Redis refuses an interval after it): no messages."""
    top = "18446744073709551615-18446744073709551615"

    response = acme.client.get(path, {"after": top})

    assert response.status_code == 200, response.content
    assert response.json() == {"messages": [], "next": None}


@pytest.mark.parametrize(
    "cursor",
    [
        "W251bGxd",  # base64 of [null]
        "WyJhIiwiYiJd",  # ["a","b"]: the wrong length
        "WzFd",  # [1]: not a name
        "e30",  # {}
        "bnVsbA",  # null
        "%%%",
        "W251bGwK\u0661",
        "WyJcdTAwMDAiXQ",  # ["\u0000"]: PostgreSQL refuses NUL in text
    ],
)
@pytest.mark.parametrize("path", ["/v1/queues", "/v1/topics", "/v1/subscriptions"])
def test_undecodable_or_ill_typed_cursor_is_400(acme: TenantCtx, path: str, cursor: str) -> None:
    response = acme.client.get(path, {"cursor": cursor})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {"cursor"}


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/audit-events", "WzE4NDQ2NzQ0MDczNzA5NTUxNjE2XQ"),  # [2**64]: beyond bigint
        ("/v1/audit-events", "WyIxIl0"),  # ["1"]: a string for an integer id
        ("/v1/audit-events", "W251bGxd"),
        ("/v1/keys", "WyIyMDI0LTAxLTAxIiwiYSJd"),  # ["2024-01-01","a"]: no UUID
        ("/v1/keys", "WyIyMDI0LTAxLTAxVDAwOjAwOjAwIiwiYSJd"),  # a naive time
        ("/v1/keys", "W251bGwsbnVsbF0"),  # [null,null]
    ],
)
def test_cursors_are_checked_against_their_fields(acme: TenantCtx, path: str, cursor: str) -> None:
    """Each value of a cursor must be what its ordering field holds (type, range): otherwise
    a 400, never a query error."""
    response = acme.client.get(path, {"cursor": cursor})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {"cursor"}


def test_a_cursor_from_a_page_still_works(acme: TenantCtx) -> None:
    for name in ("a", "b", "c"):
        make_queue(tenant=acme.tenant, name=name)

    first = acme.client.get("/v1/queues", {"limit": 2}).json()
    second = acme.client.get("/v1/queues", {"limit": 2, "cursor": first["next"]}).json()

    assert [q["name"] for q in first["results"]] == ["a", "b"]
    assert [q["name"] for q in second["results"]] == ["c"]
    assert second["next"] is None


@pytest.mark.parametrize("path", ["/v1/queues", "/v1/topics", "/v1/subscriptions"])
@pytest.mark.parametrize("limit", ["", "0", "201", "1.5", "\u0661", " 1"])
def test_limit_must_be_1_to_200(acme: TenantCtx, path: str, limit: str) -> None:
    response = acme.client.get(path, {"limit": limit})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {"limit"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/queues/%00"),
        ("get", "/v1/queues/a%00b"),
        ("patch", "/v1/queues/%00"),
        ("delete", "/v1/queues/%00"),
        ("get", "/v1/queues/%00/messages"),
        ("post", "/v1/queues/%00/messages"),
        ("post", "/v1/queues/%00/pull"),
        ("post", "/v1/queues/%00/purge"),
        ("get", "/v1/topics/%00"),
        ("get", "/v1/topics/%00/messages"),
        ("post", "/v1/topics/%00/messages"),
        ("get", "/v1/subscriptions/%00"),
        ("post", "/v1/subscriptions/%00/ack"),
        ("post", "/v1/subscriptions/%00/seek"),
        ("get", "/v1/queues/" + "a" * 129),
        ("get", "/v1/queues/-a"),
    ],
)
def test_a_path_that_cannot_name_a_resource_is_404(acme: TenantCtx, method: str, path: str) -> None:
    """PostgreSQL refuses NUL in text: a name outside the name pattern is never looked up."""
    before = rows(acme)

    if method == "get":
        response = acme.client.get(path)
    else:
        response = getattr(acme.client, method)(path, data="{}", content_type="application/json")

    assert_problem(response, 404, "not_found")
    assert rows(acme) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/queues/orders/pull", {"visibility_timeout": None}, "visibility_timeout"),
        ("/v1/queues/orders/pull", {"max_messages": None}, "max_messages"),
        ("/v1/queues/orders/pull", {"wait_seconds": None}, "wait_seconds"),
        ("/v1/subscriptions/audit/pull", {"visibility_timeout": None}, "visibility_timeout"),
        (
            "/v1/queues/orders/nack",
            {"ack_ids": ["0.1-1.1"], "delay_seconds": None},
            "delay_seconds",
        ),
        ("/v1/queues/orders/modify-deadline", {"ack_ids": ["0.1-1.1"], "seconds": None}, "seconds"),
        ("/v1/queues/orders/modify-deadline", {"ack_ids": ["0.1-1.1"]}, "seconds"),
        ("/v1/queues/orders/ack", {"ack_ids": ["0.1-1.1"], "extra": 1}, "extra"),
        ("/v1/queues/orders/pull", {"max": 1}, "max"),
        ("/v1/queues", {"name": "q", "visibility_timeout": None}, "visibility_timeout"),
        ("/v1/queues", {"name": "q", "delay_seconds": None}, "delay_seconds"),
        ("/v1/queues", {"name": "q", "retry_backoff": None}, "retry_backoff"),
        ("/v1/queues", {"name": "q", "retry_backoff": {"min": 1}}, "retry_backoff.min"),
        ("/v1/queues", {"name": "q", "colour": "red"}, "colour"),
        ("/v1/topics", {"name": "t", "partitions": None}, "partitions"),
        ("/v1/topics", {"name": "t", "retention_seconds": None}, "retention_seconds"),
        ("/v1/topics", {"name": "t", "colour": "red"}, "colour"),
        (
            "/v1/subscriptions",
            {"name": "s", "topic": "events", "visibility_timeout": None},
            "visibility_timeout",
        ),
        ("/v1/subscriptions", {"name": "s", "topic": "events", "start_at": None}, "start_at"),
        ("/v1/subscriptions", {"name": "s", "topic": "events", "filter": {"x": {}}}, "filter.x"),
        (
            "/v1/subscriptions",
            {"name": "s", "topic": "events", "filter": {"attributes": {"a\x00": "x"}}},
            "filter.attributes",
        ),
        (
            "/v1/subscriptions",
            {"name": "s", "topic": "events", "filter": {"attributes": {"a": "x\x00"}}},
            "filter.attributes.a",
        ),
        ("/v1/subscriptions/audit/seek", {"to": "earliest", "from": "latest"}, "from"),
        ("/v1/queues/orders/redrive", {"to": "orders", "all": True}, "all"),
    ],
)
def test_null_or_unknown_field_is_400_and_changes_nothing(
    acme: TenantCtx, leased: dict[str, Any], path: str, body: dict[str, Any], field: str
) -> None:
    before = (rows(acme), redis_state())

    response = post_json(acme.client, path, body)

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {field}
    assert (rows(acme), redis_state()) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/queues/orders", {"visibility_timeout": None}, "visibility_timeout"),
        ("/v1/queues/orders", {"retention_seconds": None}, "retention_seconds"),
        ("/v1/queues/orders", {"colour": "red"}, "colour"),
        ("/v1/topics/events", {"retention_seconds": None}, "retention_seconds"),
        ("/v1/subscriptions/audit", {"visibility_timeout": None}, "visibility_timeout"),
        ("/v1/subscriptions/audit", {"filter": None}, "filter"),
    ],
)
def test_patch_with_null_or_unknown_field_is_400_and_changes_nothing(
    acme: TenantCtx, leased: dict[str, Any], path: str, body: dict[str, Any], field: str
) -> None:
    before = rows(acme)

    response = patch_json(acme.client, path, body)

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {field}
    assert rows(acme) == before


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/queues/orders/pull", "POST"),
        ("/v1/queues/orders/ack", "POST"),
        ("/v1/subscriptions/audit/modify-deadline", "POST"),
        ("/v1/queues/orders/messages", "GET, POST, HEAD"),
        ("/v1/topics/events/messages", "GET, POST, HEAD"),
    ],
)
@pytest.mark.parametrize("method", ["TRACE", "PUT", "DELETE", "OPTIONS"])
def test_unsupported_method_on_the_data_plane_is_405_with_allow(
    acme: TenantCtx, leased: dict[str, Any], path: str, allow: str, method: str
) -> None:
    before = redis_state()

    response = acme.client.generic(method, path)

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == allow
    assert redis_state() == before


@pytest.mark.parametrize("method", ["DISPATCH", "SETUP", "AS_VIEW"])
def test_a_method_named_like_a_view_attribute_is_405(
    acme: TenantCtx, leased: dict[str, Any], method: str
) -> None:
    """Only HTTP verbs reach handlers: "DISPATCH" is not a way to call the view's dispatch."""
    response = acme.client.generic(method, "/v1/queues/orders/pull")

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    ("to", "echo"),
    [
        # UTC instants beyond year 9999 / before year 1: they seek like the last / first one
        ("9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999Z"),
        ("9999-12-31T23:59:60Z", "9999-12-31T23:59:59.999Z"),
        ("0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00Z"),
        ("2024-02-29T23:59:60Z", "2024-03-01T00:00:00Z"),  # a leap second
        ("2024-01-01t00:00:00.123456789z", "2024-01-01T00:00:00.123Z"),
    ],
)
def test_seek_takes_every_rfc_3339_time(
    acme: TenantCtx, leased: dict[str, Any], to: str, echo: str
) -> None:
    response = post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": to})

    assert response.status_code == 200, response.content
    assert response.json() == {"to": echo}


@pytest.mark.parametrize(
    "to", ["2024-02-30T00:00:00Z", "2024-01-01T00:00:00+24:00", "\u0662024-01-01T00:00:00Z"]
)
def test_seek_to_no_time_is_400(acme: TenantCtx, leased: dict[str, Any], to: str) -> None:
    response = post_json(acme.client, "/v1/subscriptions/audit/seek", {"to": to})

    problem = assert_problem(response, 400, "invalid_request")
    assert field_errors(problem) == {"to"}


def test_unsupported_method_is_405_with_allow_without_a_key(db: None) -> None:
    """The method is checked before the key: there is nothing to reveal in a 405."""
    response = Client().generic("TRACE", "/v1/queues/orders/pull")

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/v1/queues/jobs/pull", "POST"),
        ("OPTIONS", "/v1/queues/jobs/ack", "POST"),
        ("TRACE", "/v1/queues/jobs/messages", "GET, POST, HEAD"),
    ],
)
async def test_unsupported_method_through_the_asgi_app_is_405_with_allow(
    method: str, path: str, allow: str
) -> None:
    """As gunicorn serves it (openplatform.asgi routes a Bearer request that is not a POST to
    Django's handler): the same 405 with Allow."""
    ctx = await sync_to_async(make_tenant)(name="Methods")
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.request(method, path, headers=api_headers(ctx.key))
    await sync_to_async(connections.close_all)()

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow
