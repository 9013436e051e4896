"""Assertions and request shortcuts shared by the test modules (the rows they need come from
tests.factories)."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from django.http import HttpResponse
from django.test import Client

from tenants.models import ApiKey
from tests.factories import TenantCtx

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


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


def field_errors(body: dict[str, Any]) -> set[str]:
    """The fields a problem's ``errors`` name."""
    return {item.get("field", "") for item in body.get("errors", [])}


def untimed(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without created_at / updated_at, after checking they are RFC 3339 UTC."""
    assert RFC3339_UTC.match(body["created_at"]), body
    assert RFC3339_UTC.match(body["updated_at"]), body
    return {k: v for k, v in body.items() if k not in ("created_at", "updated_at")}


def prefix_of(token: str) -> str:
    return token.split("_")[1]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def key_of(ctx: TenantCtx) -> ApiKey:
    """The all-scopes key make_tenant issued for ctx, as stored now."""
    return ApiKey.objects.for_tenant(ctx.tenant).get(prefix=prefix_of(ctx.key))


def post_json(client: Client, path: str, data: Any) -> HttpResponse:
    return client.post(path, data=json.dumps(data), content_type="application/json")


def patch_json(client: Client, path: str, data: Any) -> HttpResponse:
    return client.patch(path, data=orjson.dumps(data), content_type="application/json")
