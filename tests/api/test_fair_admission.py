"""Per-tenant admission in the data-plane app (api.admission.FairAdmission): at most N
requests of one tenant run at once in a worker; the rest wait their turn in order, and
another tenant's request goes in meanwhile. Long polls are not counted while they wait."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from api.admission import FairAdmission
from queues.engine import dataplane
from tests.factories import TenantCtx, api_headers, make_queue, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH = "/v1/queues/jobs/messages"


def _tenant(name: str) -> TenantCtx:
    ctx = make_tenant(name=name)
    make_queue(tenant=ctx.tenant, name="jobs")
    return ctx


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch, settings: Any) -> AsyncIterator[Any]:
    from openplatform.asgi import data_plane_application

    settings.HOT_CACHE_TTL_SECONDS = 60  # callers stay verifiable from the local copies
    monkeypatch.setattr(data_plane_application, "admission", FairAdmission(2))
    yield data_plane_application
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    from openplatform.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class Gate:
    """A stand-in for the publish script that holds every call until opened, counting the
    calls in progress per tenant and the most seen at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.entered: list[str] = []
        self.ids = itertools.count()

    async def apublish(self, dest: Any, messages: Any, now: int, limits: Any) -> Any:
        tenant = dest.usage  # the tenant's usage hash: one per tenant
        self.entered.append(tenant)
        self.now[tenant] += 1
        self.most[tenant] = max(self.most[tenant], self.now[tenant])
        try:
            await self.open.wait()
        finally:
            self.now[tenant] -= 1
        return [
            {"id": f"m{next(self.ids)}", "partition": 0, "offset": "0-1", "duplicate": False}
            for _ in messages
        ]


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_no_more_than_n_of_one_tenant_run_and_another_tenant_goes_in(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await sync_to_async(_tenant)("Flood"), await sync_to_async(_tenant)("Bystander")
    ha, hb = api_headers(a.key), api_headers(b.key)
    # warm: both keys and tenants are in this process's hot cache, so both are verifiable
    for h in (ha, hb):
        assert (await client.post(PUBLISH, json={"body": 0}, headers=h)).status_code == 201
    gate = Gate()
    monkeypatch.setattr(dataplane, "apublish", gate.apublish)
    floods = [
        asyncio.ensure_future(client.post(PUBLISH, json={"body": i}, headers=ha)) for i in range(4)
    ]
    admission = app.admission
    tenant_a = str(a.tenant.id)
    await _until(lambda: admission.running(tenant_a) == 2 and admission.waiting(tenant_a) == 2)
    await asyncio.sleep(0.05)  # time for any (wrongly) admitted third call to reach the script
    assert sum(gate.now.values()) == 2
    # the other tenant is not behind the flood's line
    bystander = asyncio.ensure_future(client.post(PUBLISH, json={"body": "b"}, headers=hb))
    await _until(lambda: len(gate.entered) == 3)
    assert admission.running(str(b.tenant.id)) == 1
    assert admission.waiting(tenant_a) == 2
    gate.open.set()
    answers = await asyncio.gather(*floods, bystander)
    assert [r.status_code for r in answers] == [201] * 5
    assert max(gate.most.values()) == 2
    assert len(gate.entered) == 5
    assert admission.running(tenant_a) == 0
    assert admission.waiting(tenant_a) == 0
    assert admission.running(str(b.tenant.id)) == 0


async def test_a_tenants_waiters_go_in_first_come_first_served() -> None:
    admission = FairAdmission(1)
    order: list[int] = []

    async def call(i: int) -> None:
        await admission.acquire("t")
        order.append(i)
        await asyncio.sleep(0)
        admission.release("t")

    await admission.acquire("t")
    tasks = [asyncio.ensure_future(call(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert admission.waiting("t") == 4
    assert order == []
    admission.release("t")
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert admission.running("t") == 0
    assert admission.waiting("t") == 0


async def test_a_cancelled_waiter_holds_no_slot() -> None:
    admission = FairAdmission(1)
    await admission.acquire("t")
    waiter = asyncio.ensure_future(admission.acquire("t"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert admission.waiting("t") == 0
    admission.release("t")
    assert admission.running("t") == 0
    await admission.acquire("t")  # the slot is free again, at once
    assert admission.running("t") == 1


async def test_waiters_behind_an_unavailable_answer_get_it_at_once() -> None:
    """When a call finds a backing service down, the tenant's queued calls get that answer
    instead of a slot (they would wait for one, then for the same timeout); another tenant's
    waiters and the slots themselves are untouched."""
    admission = FairAdmission(1)
    assert await admission.acquire("t") is None
    assert await admission.acquire("u") is None
    waiters = [asyncio.ensure_future(admission.acquire("t")) for _ in range(3)]
    other = asyncio.ensure_future(admission.acquire("u"))
    await asyncio.sleep(0)
    admission.shed("t", "503 answer")
    admission.release("t")
    assert await asyncio.gather(*waiters) == ["503 answer"] * 3
    assert (admission.running("t"), admission.waiting("t")) == (0, 0)
    assert not other.done()
    admission.release("u")
    assert await other is None
    assert admission.running("u") == 1


async def test_long_polls_are_not_admitted_so_they_never_hold_a_slot(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Three long polls of a tenant whose limit is 2 wait together, and a publish of the same
    tenant still goes in and wakes one of them."""
    a = await sync_to_async(_tenant)("Waiters")
    h = api_headers(a.key)
    assert (await client.post("/v1/queues/jobs/pull", json={}, headers=h)).status_code == 200
    polls = [
        asyncio.ensure_future(
            client.post("/v1/queues/jobs/pull", json={"wait_seconds": 5}, headers=h)
        )
        for _ in range(3)
    ]
    await asyncio.sleep(0.3)
    assert app.admission.running(str(a.tenant.id)) == 0
    published = await client.post(PUBLISH, json={"body": "wake"}, headers=h)
    assert published.status_code == 201
    done, pending = await asyncio.wait(polls, timeout=4, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    assert done.pop().result().json()["messages"][0]["body"] == "wake"
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
