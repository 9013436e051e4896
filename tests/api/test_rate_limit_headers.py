"""The RateLimit-Policy and RateLimit header fields (IETF draft "RateLimit header fields for
HTTP") on every data-plane answer, successes and refusals: the limit nearest to exhaustion
among those the call met, with what is left of it. The clock is fixed so the figures are
exact."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from queues import messaging
from tenants.models import ApiKey
from tenants.principals import key_cache, key_document, tenant_cache, tenant_document
from tests.factories import (
    TenantCtx,
    api_client,
    api_headers,
    make_key,
    make_plan,
    make_queue,
    make_tenant,
)
from tests.helpers import assert_problem, post_json

T0 = 1_800_000_000_000  # 2027-01-15 08:00:00 UTC, 0 ms into its second
JANUARY = 31 * 86400
TO_FEBRUARY = 16 * 86400 + 16 * 3600


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messaging, "now_ms", lambda: T0)


@pytest.fixture
def orders(acme: TenantCtx) -> TenantCtx:
    make_queue(tenant=acme.tenant, name="orders")
    return acme


def on_plan(ctx: TenantCtx, **quotas: Any) -> None:
    make_plan(tenant=ctx.tenant, **quotas)
    tenant_cache.push(str(ctx.tenant.id), tenant_document(ctx.tenant))


def rate_headers(response: Any) -> tuple[str | None, str | None]:
    return response.get("RateLimit-Policy"), response.get("RateLimit")


def test_publish_carries_the_publish_rate(orders: TenantCtx) -> None:
    on_plan(orders, publish_rate_per_second=100)
    response = post_json(orders.client, "/v1/queues/orders/messages", {"body": 1})
    assert response.status_code == 201
    assert rate_headers(response) == ('"publish";q=100;w=1', '"publish";r=99;t=1')


def test_the_limit_nearest_to_exhaustion_is_told(orders: TenantCtx) -> None:
    on_plan(orders, publish_rate_per_second=100, monthly_messages=10)
    response = post_json(
        orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]}
    )
    assert rate_headers(response) == (
        f'"monthly";q=10;w={JANUARY}',
        f'"monthly";r=8;t={TO_FEBRUARY}',
    )


def test_refusal_is_429_with_headers_and_retry_after(orders: TenantCtx) -> None:
    on_plan(orders, publish_rate_per_second=2)
    first = post_json(
        orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]}
    )
    assert rate_headers(first) == ('"publish";q=2;w=1', '"publish";r=0;t=1')
    refused = post_json(orders.client, "/v1/queues/orders/messages", {"body": 3})
    problem = assert_problem(refused, 429, "rate_limited")
    assert problem["detail"] == (
        "The tenant's publish rate of 2 messages/s is used up for this second; nothing was stored."
    )
    assert refused["Retry-After"] == "1"
    assert rate_headers(refused) == ('"publish";q=2;w=1', '"publish";r=0;t=1')


def test_monthly_refusal_is_403_with_headers(orders: TenantCtx) -> None:
    on_plan(orders, monthly_messages=1)
    post_json(orders.client, "/v1/queues/orders/messages", {"body": 1})
    refused = post_json(orders.client, "/v1/queues/orders/messages", {"body": 2})
    problem = assert_problem(refused, 403, "quota_exceeded")
    assert problem["detail"] == (
        "The tenant's monthly quota of 1 messages is used up; nothing was stored."
    )
    assert rate_headers(refused) == (
        f'"monthly";q=1;w={JANUARY}',
        f'"monthly";r=0;t={TO_FEBRUARY}',
    )


def test_pull_and_settle_carry_theirs(orders: TenantCtx) -> None:
    post_json(orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]})
    on_plan(orders, consume_rate_per_second=50, request_rate_per_second=1000)
    pulled = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 10})
    assert pulled.status_code == 200
    assert rate_headers(pulled) == ('"consume";q=50;w=1', '"consume";r=48;t=1')
    ack_ids = [m["ack_id"] for m in pulled.json()["messages"]]
    for verb, body in (
        ("modify-deadline", {"ack_ids": ack_ids, "seconds": 30}),
        ("nack", {"ack_ids": ack_ids[:1]}),
        ("ack", {"ack_ids": ack_ids[1:]}),
    ):
        response = post_json(orders.client, f"/v1/queues/orders/{verb}", body)
        assert response.status_code == 200, verb
        assert rate_headers(response)[0] == '"requests";q=1000;w=1'
    # pull, modify-deadline, nack, ack: four requests this second
    assert rate_headers(response)[1] == '"requests";r=996;t=1'


def test_pull_refused_by_the_consume_rate_leases_nothing(orders: TenantCtx) -> None:
    post_json(orders.client, "/v1/queues/orders/messages", {"messages": [{"body": 1}, {"body": 2}]})
    on_plan(orders, consume_rate_per_second=1)
    assert len(post_json(orders.client, "/v1/queues/orders/pull", {}).json()["messages"]) == 1
    refused = post_json(orders.client, "/v1/queues/orders/pull", {"max_messages": 5})
    assert_problem(refused, 429, "rate_limited")
    assert refused["Retry-After"] == "1"
    assert rate_headers(refused) == ('"consume";q=1;w=1', '"consume";r=0;t=1')


def test_a_keys_own_limit(orders: TenantCtx) -> None:
    on_plan(orders, publish_rate_per_second=100)
    made = make_key(tenant=orders.tenant, name="slow")
    ApiKey.all_tenants.filter(pk=made.key.pk).update(publish_rate_per_second=5)
    row = ApiKey.all_tenants.get(pk=made.key.pk)
    key_cache.push(row.prefix, key_document(row))
    response = post_json(api_client(made), "/v1/queues/orders/messages", {"body": 1})
    assert rate_headers(response) == ('"key-publish";q=5;w=1', '"key-publish";r=4;t=1')


def test_no_limit_no_headers(orders: TenantCtx) -> None:
    response = post_json(orders.client, "/v1/queues/orders/messages", {"body": 1})
    assert response.status_code == 201
    assert rate_headers(response) == (None, None)


@pytest.mark.django_db(transaction=True)
async def test_the_data_plane_app_sends_them_too() -> None:
    """The lean ASGI path (api.asgi.DataPlaneApp) serves the same views: same headers."""
    from openplatform.asgi import application

    ctx = await sync_to_async(make_tenant)(name="Asgi")
    await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    await sync_to_async(on_plan)(ctx, publish_rate_per_second=1)
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ok = await client.post(
                "/v1/queues/jobs/messages", json={"body": 1}, headers=api_headers(ctx.key)
            )
            refused = await client.post(
                "/v1/queues/jobs/messages", json={"body": 2}, headers=api_headers(ctx.key)
            )
    finally:
        await sync_to_async(connections.close_all)()
    assert ok.status_code == 201
    assert ok.headers["ratelimit"] == '"publish";r=0;t=1'
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-policy"] == '"publish";q=1;w=1'
