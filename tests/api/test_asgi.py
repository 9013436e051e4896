"""The ASGI application as gunicorn serves it: which handler serves which request, and that
the lean API paths keep the security headers, the limits and the error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from openplatform.asgi import application
from tests.factories import api_headers, make_queue, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    ctx = await sync_to_async(make_tenant)(name="Asgi")
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, ctx.key
    await sync_to_async(connections.close_all)()


async def test_data_plane_serves_publish_and_pull_with_security_headers(api: Any) -> None:
    """A Bearer POST to an async data-plane view is served on the event loop: the same
    answers as through Django, with Django's security headers and a Content-Length."""
    client, key = api
    published = await client.post(
        "/v1/queues/jobs/messages", json={"body": {"n": 1}}, headers=api_headers(key)
    )
    assert published.status_code == 201
    assert published.headers["x-content-type-options"] == "nosniff"
    assert published.headers["x-frame-options"] == "DENY"
    assert published.headers["content-length"] == str(len(published.content))
    (item,) = published.json()["messages"]
    pulled = await client.post(
        "/v1/queues/jobs/pull", json={"max_messages": 5}, headers=api_headers(key)
    )
    assert pulled.status_code == 200
    (message,) = pulled.json()["messages"]
    assert message["id"] == item["id"]
    assert message["body"] == {"n": 1}


async def test_data_plane_errors_are_problem_json(api: Any) -> None:
    """Unknown queues, bad keys and bad bodies on the lean path are problem+json."""
    client, key = api
    missing = await client.post(
        "/v1/queues/nope/messages", json={"body": 1}, headers=api_headers(key)
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    wrong = await client.post(
        "/v1/queues/jobs/messages", json={"body": 1}, headers=api_headers("op_aaaaaaaaaa_nope")
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthenticated"
    broken = await client.post(
        "/v1/queues/jobs/messages",
        content=b"{oops",
        headers={**api_headers(key), "Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_request"
    unknown = await client.post("/v1/nowhere", json={}, headers=api_headers(key))
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"


async def test_oversize_body_is_413_before_it_is_read_whole(api: Any, settings: Any) -> None:
    """The lean path enforces the request size limit while reading the body, with or
    without a Content-Length, and stores nothing."""
    client, key = api
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = await client.post(
        "/v1/queues/jobs/messages", json={"body": "x" * 2000}, headers=api_headers(key)
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 40 * 1024 * 1024
    stats = await client.get("/v1/queues/jobs", headers=api_headers(key))
    assert stats.json()["stats"]["available"] == 0


async def test_control_plane_and_probes_are_served_too(api: Any) -> None:
    """Bearer GETs go to the API handler (DRF views), requests without a key to the full
    stack: both answer as before."""
    client, key = api
    tenant = await client.get("/v1/tenant", headers=api_headers(key))
    assert tenant.status_code == 200
    assert tenant.json()["slug"] == "asgi"
    assert tenant.headers["x-content-type-options"] == "nosniff"
    anonymous = await client.get("/v1/tenant")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


async def test_long_poll_is_cancelled_when_its_client_leaves(api: Any) -> None:
    """A waiting pull whose client disconnects ends at once and leases nothing: a message
    published afterwards is still available to the next pull."""
    import asyncio

    from openplatform.asgi import application as app

    client, key = api
    gone = asyncio.Event()
    body = b'{"wait_seconds": 20}'
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/queues/jobs/pull",
        "raw_path": b"/v1/queues/jobs/pull",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    waiting = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    gone.set()
    await asyncio.wait_for(waiting, 5)
    assert sent == []  # nothing was answered to a client that left
    await client.post("/v1/queues/jobs/messages", json={"body": "after"}, headers=api_headers(key))
    pulled = await client.post("/v1/queues/jobs/pull", json={}, headers=api_headers(key))
    assert [m["body"] for m in pulled.json()["messages"]] == ["after"]


async def test_host_header_is_checked_on_the_lean_paths(api: Any) -> None:
    """A Host outside ALLOWED_HOSTS is refused on the data plane and the control plane as on
    the full stack, and nothing is stored."""
    client, key = api
    evil = {**api_headers(key), "Host": "evil.example"}
    published = await client.post("/v1/queues/jobs/messages", json={"body": 1}, headers=evil)
    assert published.status_code == 400
    assert published.json()["code"] == "invalid_request"
    listed = await client.get("/v1/queues", headers=evil)
    assert listed.status_code == 400
    stats = await client.get("/v1/queues/jobs", headers=api_headers(key))
    assert stats.json()["stats"]["available"] == 0
