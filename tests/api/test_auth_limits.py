"""A flood of bad API keys: refused without PostgreSQL, counted per client address, and
answered 429 rate_limited with Retry-After past the limit, on the control plane (DRF) and on
the data plane (the ASGI app gunicorn serves). Valid keys are unaffected."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from openplatform.asgi import application
from tenants import principals, services
from tenants.authority import OPERATOR
from tests.factories import TenantCtx, api_client, api_headers, make_key, make_queue, make_tenant
from tests.helpers import assert_problem, record_async_redis_commands

LIMIT = 5


@pytest.fixture(autouse=True)
def limits(settings: Any) -> Iterator[Any]:
    """LIMIT refusals a minute per address; this process forgets the limited addresses at the
    end. Starts away from a minute boundary, so a test's refusals share one window."""
    settings.AUTH_FAILURES_PER_SECOND = 0
    settings.AUTH_FAILURES_PER_MINUTE = LIMIT
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.05)
    yield settings
    principals.failure_limiter.forget_local()


def unknown_key(n: int) -> str:
    return f"op_{n:0>10}_{'x' * 40}"


def get_tenant(key: str, address: str = "203.0.113.20", **extra: str) -> Any:
    return api_client(key).get("/v1/tenant", REMOTE_ADDR=address, **extra)


# --- the control plane (DRF) -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_flood_of_unknown_keys_is_rate_limited(acme: TenantCtx) -> None:
    """LIMIT unknown keys from one address are 401s; the next is a 429 problem rate_limited
    with Retry-After (seconds to the end of the minute), and so are the ones after it."""
    for n in range(LIMIT):
        assert_problem(get_tenant(unknown_key(n)), 401, "unauthenticated")

    response = get_tenant(unknown_key(LIMIT))

    body = assert_problem(response, 429, "rate_limited")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["detail"] == (
        f"Too many failed authentications from this address; try again in {retry_after} "
        f"second{'s' if retry_after != 1 else ''}."
    )
    assert_problem(get_tenant("op_malformed"), 429, "rate_limited")


@pytest.mark.django_db
def test_valid_keys_are_unaffected(acme: TenantCtx) -> None:
    """The right key from the flooding address still gets its 200, and another address's
    bad key is still a plain 401."""
    for n in range(LIMIT + 3):
        get_tenant(unknown_key(n))

    assert get_tenant(acme.key).status_code == 200
    assert get_tenant(acme.key).json()["slug"] == "acme"
    assert_problem(get_tenant(unknown_key(99), address="198.51.100.7"), 401, "unauthenticated")


@pytest.mark.django_db
def test_forged_forwarded_for_buys_no_new_budget(acme: TenantCtx) -> None:
    """No proxy is trusted by default: a client that writes a new X-Forwarded-For on every
    request is still counted by its own address."""
    for n in range(LIMIT):
        get_tenant(unknown_key(n), HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    response = get_tenant(unknown_key(LIMIT), HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert_problem(response, 429, "rate_limited")


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(
    acme: TenantCtx, limits: Any
) -> None:
    """With the proxy in TRUSTED_PROXIES, the client it names is what is counted: one
    flooding client behind it is limited, its neighbour is not."""
    limits.TRUSTED_PROXIES = ["10.0.0.0/8"]
    for n in range(LIMIT + 1):
        get_tenant(unknown_key(n), address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1")

    flooding = get_tenant(unknown_key(50), address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1")
    neighbour = get_tenant(unknown_key(51), address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert_problem(flooding, 429, "rate_limited")
    assert_problem(neighbour, 401, "unauthenticated")


@pytest.mark.django_db
def test_unknown_and_revoked_keys_make_no_query_when_warm(
    acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    """Once the key index is built, every request with a new unknown key, and every request
    with a revoked key, is answered 401 without one PostgreSQL query."""
    with django_capture_on_commit_callbacks(execute=True):
        revoked = make_key(tenant=acme.tenant)
        services.key_revoke(
            authority=OPERATOR, tenant=acme.tenant, key_id=str(revoked.key.id), actor="test"
        )
    get_tenant(unknown_key(0), address="198.51.100.8")  # warms the index

    with CaptureQueriesContext(connection) as queries:
        for n in range(1, LIMIT):
            assert_problem(get_tenant(unknown_key(n)), 401, "unauthenticated")
        for address in ("198.51.100.9", "198.51.100.10"):
            response = get_tenant(revoked.secret, address=address)
            assert_problem(response, 401, "unauthenticated")
            assert response.json()["detail"] == "This API key has been revoked."

    assert queries.captured_queries == []


# --- the data plane (the ASGI app) -------------------------------------------------------------


@pytest.fixture
async def plane() -> AsyncIterator[tuple[TenantCtx, httpx.AsyncClient]]:
    """A tenant with a queue, and an HTTP client on the ASGI app from 203.0.113.30."""
    ctx = await sync_to_async(make_tenant)(name="Plane")
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    transport = httpx.ASGITransport(app=application, client=("203.0.113.30", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield ctx, client
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
async def test_a_flood_on_the_data_plane_is_rate_limited(plane: Any, monkeypatch: Any) -> None:
    """Publishing with unknown keys: LIMIT 401s, then 429 rate_limited with Retry-After; the
    valid key from the same address still publishes, and its warm publish is still one Redis
    round trip (the counters are touched only by refusals)."""
    ctx, client = plane
    valid = await client.post(
        "/v1/queues/jobs/messages", json={"body": 0}, headers=api_headers(ctx.key)
    )
    assert valid.status_code == 201
    for n in range(LIMIT):
        response = await client.post(
            "/v1/queues/jobs/messages", json={"body": 1}, headers=api_headers(unknown_key(n))
        )
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    limited = await client.post(
        "/v1/queues/jobs/messages", json={"body": 1}, headers=api_headers(unknown_key(LIMIT))
    )
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60

    sent = record_async_redis_commands(monkeypatch)
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application, client=("198.51.100.30", 1)),
        base_url="http://testserver",
    )
    async with other:
        elsewhere = await other.post(
            "/v1/queues/jobs/messages", json={"body": 2}, headers=api_headers(ctx.key)
        )
    assert elsewhere.status_code == 201
    assert sent == ["EVALSHA"]
    sent.clear()
    same = await client.post(
        "/v1/queues/jobs/messages", json={"body": 3}, headers=api_headers(ctx.key)
    )
    assert same.status_code == 201
    assert sent == ["GET", "EVALSHA"]  # limited address: the key is read from Redis each time
