"""Assertions and builders shared by the test modules."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.http import HttpResponse
from django.test import Client

from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ApiKey
from tenants.services import KeyCreated
from tests.conftest import TenantCtx

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def record_async_redis_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the name of every command an async Redis connection sends is appended to
    the returned list: counted where each command leaves the process, whichever client (the
    lane, the pooled client, pub/sub) sent it. A real Redis answers them as usual."""
    sent: list[str] = []
    original = aioredis.Connection.send_command

    async def spy(self: aioredis.Connection, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(self, *args, **options)

    monkeypatch.setattr(aioredis.Connection, "send_command", spy)
    return sent


def assert_problem(response: HttpResponse, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert set(body) >= PROBLEM_FIELDS, body
    assert set(body) <= PROBLEM_FIELDS | {"errors"}, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:openplatform:problem:{code}"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def new_key(
    ctx: TenantCtx,
    *,
    name: str = "limited",
    scopes: list[str] | None = None,
    resources: list[str] | None = None,
    **options: Any,
) -> KeyCreated:
    """A new key of ctx's tenant (all scopes unless told otherwise)."""
    return services.key_create(
        authority=OPERATOR,
        tenant=ctx.tenant,
        name=name,
        scopes=scopes or ["publish", "consume", "manage"],
        resources=resources or [],
        actor="test",
        **options,
    )


def bearer(token: str) -> Client:
    """A client that sends ``token`` as its API key."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def prefix_of(token: str) -> str:
    return token.split("_")[1]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def key_of(ctx: TenantCtx) -> ApiKey:
    """The all-scopes key make_tenant issued for ctx."""
    return ApiKey.objects.for_tenant(ctx.tenant).get(prefix=prefix_of(ctx.key))


def post_json(client: Client, path: str, data: Any) -> HttpResponse:
    return client.post(path, data=json.dumps(data), content_type="application/json")
