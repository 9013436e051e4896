"""The data-plane app's early refusal (api.admission.RefusalMemory): within the wall-clock
second a script refused a call by a per-second rate, further calls of that limit's scope get
the same 429 from the ASGI layer, before the body is read or Redis asked; and never beyond
that scope or that second. The clock is a fixed one the tests move."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from queues.engine import dataplane
from tenants.principals import tenant_cache, tenant_document
from tests.factories import TenantCtx, api_headers, make_key, make_plan, make_queue, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

SECOND = float(int(time.time()) + 1000) + 0.25  # 0.25 s into a second, after any real one


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[float]:
    """time.time() as the tests set it (the scripts' now_ms and the memory both read it)."""
    settings.HOT_CACHE_TTL_SECONDS = 60  # the hot cache's own copies outlive a slow test
    now = [SECOND]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


def on_plan(ctx: TenantCtx, **quotas: Any) -> None:
    make_plan(tenant=ctx.tenant, **quotas)
    tenant_cache.push(str(ctx.tenant.id), tenant_document(ctx.tenant))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    from openplatform.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
    await sync_to_async(connections.close_all)()


def _tenant(**quotas: Any) -> TenantCtx:
    ctx = make_tenant(name="Early")
    make_queue(tenant=ctx.tenant, name="jobs")
    on_plan(ctx, **quotas)
    return ctx


def _no_script(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every script call fail loudly: what answers now answers without Redis."""
    calls: list[str] = []

    async def refused(*args: Any, **kwargs: Any) -> Any:
        calls.append("script")
        raise AssertionError("the script was called")

    for name in ("apublish", "apull", "asettle"):
        monkeypatch.setattr(dataplane, name, refused)
    return calls


def _same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, b.status_code) == (429, 429)
    assert a.content == b.content
    for name in ("content-type", "retry-after", "ratelimit-policy", "ratelimit", "content-length"):
        assert a.headers[name] == b.headers[name], name


PUBLISH = "/v1/queues/jobs/messages"
PULL = "/v1/queues/jobs/pull"


async def test_a_refused_second_is_answered_early_with_the_same_answer(
    clock: list[float], client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    refused = await client.post(PUBLISH, json={"body": 2}, headers=headers)
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-policy"] == '"publish";q=1;w=1'
    assert refused.headers["ratelimit"] == '"publish";r=0;t=1'
    calls = _no_script(monkeypatch)
    # the body is not even read: a malformed one gets the same 429, not a 400
    early = await client.post(
        PUBLISH, content=b"{oops", headers={**headers, "Content-Type": "application/json"}
    )
    _same_answer(early, refused)
    assert early.headers["x-content-type-options"] == "nosniff"
    assert calls == []


async def test_the_next_second_goes_to_the_script(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    assert (await client.post(PUBLISH, json={"body": 2}, headers=headers)).status_code == 429
    clock[0] += 1.0
    accepted = await client.post(PUBLISH, json={"body": 3}, headers=headers)
    assert accepted.status_code == 201
    assert accepted.headers["ratelimit"] == '"publish";r=0;t=1'


async def test_a_publish_refusal_does_not_refuse_pulls_or_acks(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    assert (await client.post(PUBLISH, json={"body": 2}, headers=headers)).status_code == 429
    pulled = await client.post(PULL, json={"max_messages": 5}, headers=headers)
    assert pulled.status_code == 200
    (message,) = pulled.json()["messages"]
    assert message["body"] == 1
    acked = await client.post(
        "/v1/queues/jobs/ack", json={"ack_ids": [message["ack_id"]]}, headers=headers
    )
    assert acked.status_code == 200
    assert acked.json() == {"acked": 1, "stale": []}


async def test_a_key_rate_refuses_that_key_only_and_a_tenant_rate_every_key(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    def setup() -> tuple[TenantCtx, str]:
        ctx = _tenant(publish_rate_per_second=3)
        other = make_key(tenant=ctx.tenant, name="other")
        return ctx, other.secret

    ctx, other = await sync_to_async(setup)()
    # the key's own limit: its own call limits
    from tenants.models import ApiKey
    from tenants.principals import key_cache, key_document

    def limit_key() -> None:
        key = ApiKey.all_tenants.get(prefix=ctx.key.split("_")[1])
        key.publish_rate_per_second = 1
        key.save(update_fields=["publish_rate_per_second"])
        key_cache.push(key.prefix, key_document(key))

    await sync_to_async(limit_key)()
    mine, theirs = api_headers(ctx.key), api_headers(other)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=mine)).status_code == 201
    refused = await client.post(PUBLISH, json={"body": 2}, headers=mine)
    assert refused.headers["ratelimit-policy"] == '"key-publish";q=1;w=1'
    # another key of the tenant publishes: the key's refusal is not the tenant's
    assert (await client.post(PUBLISH, json={"body": 3}, headers=theirs)).status_code == 201
    assert (await client.post(PUBLISH, json={"body": 4}, headers=theirs)).status_code == 201
    tenant_refused = await client.post(PUBLISH, json={"body": 5}, headers=theirs)
    assert tenant_refused.headers["ratelimit-policy"] == '"publish";q=3;w=1'
    # now the tenant's rate is used up: the first key gets the tenant's refusal too, as the
    # script answers it (the tenant's check comes first)
    again = await client.post(PUBLISH, json={"body": 6}, headers=mine)
    assert again.status_code == 429
    _same_answer(again, tenant_refused)


async def test_a_batch_refusal_is_not_remembered(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    """A batch of 3 refused with 2 left says nothing of a single message: it is stored."""
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=2)
    headers = api_headers(ctx.key)
    batch = {"messages": [{"body": 1}, {"body": 2}, {"body": 3}]}
    assert (await client.post(PUBLISH, json=batch, headers=headers)).status_code == 429
    assert (await client.post(PUBLISH, json={"body": 4}, headers=headers)).status_code == 201


async def test_a_forged_secret_is_not_refused_early(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    assert (await client.post(PUBLISH, json={"body": 2}, headers=headers)).status_code == 429
    forged = "_".join(ctx.key.split("_", 2)[:2]) + "_" + "x" * 20
    answer = await client.post(PUBLISH, json={"body": 3}, headers=api_headers(forged))
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"


async def test_a_raised_limit_is_not_refused_early(
    clock: list[float], client: httpx.AsyncClient
) -> None:
    ctx = await sync_to_async(_tenant)(publish_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    assert (await client.post(PUBLISH, json={"body": 2}, headers=headers)).status_code == 429

    def raise_limit() -> None:
        plan = ctx.tenant.plan
        plan.publish_rate_per_second = 5
        plan.save(update_fields=["publish_rate_per_second"])
        ctx.tenant.refresh_from_db()
        tenant_cache.push(str(ctx.tenant.id), tenant_document(ctx.tenant))

    await sync_to_async(raise_limit)()
    accepted = await client.post(PUBLISH, json={"body": 3}, headers=headers)
    assert accepted.status_code == 201


async def test_a_request_rate_refusal_blocks_every_operation_of_the_tenant(
    clock: list[float], client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = await sync_to_async(_tenant)(request_rate_per_second=1)
    headers = api_headers(ctx.key)
    assert (await client.post(PUBLISH, json={"body": 1}, headers=headers)).status_code == 201
    refused = await client.post(PULL, json={}, headers=headers)
    assert refused.headers["ratelimit-policy"] == '"requests";q=1;w=1'
    calls = _no_script(monkeypatch)
    for path, body in ((PUBLISH, {"body": 2}), (PULL, {}), ("/v1/queues/jobs/ack", {})):
        early = await client.post(path, json=body, headers=headers)
        _same_answer(early, refused)
    assert calls == []
