"""Liveness and readiness for load balancers: no API key, no tenant."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse

from api.errors import problem_response
from api.renderers import dumps
from openplatform.redis_client import get_async_redis

READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process serves requests."""
    return HttpResponse(dumps({"status": "ok"}), content_type="application/json")


def _postgres_ok() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 only when PostgreSQL and Redis both answer; otherwise 503 naming what failed."""
    failures: list[str] = []
    try:
        await asyncio.wait_for(
            sync_to_async(_postgres_ok, thread_sensitive=True)(), READY_TIMEOUT_SECONDS
        )
    except Exception:  # any failure means not ready; the detail names the service
        failures.append("postgresql")
    try:
        await asyncio.wait_for(get_async_redis().ping(), READY_TIMEOUT_SECONDS)
    except Exception:
        failures.append("redis")
    if failures:
        return problem_response(
            503,
            "unavailable",
            "Service unavailable",
            f"Not ready: {', '.join(failures)} did not answer.",
            retry_after=5,
        )
    return HttpResponse(
        dumps({"status": "ready", "postgresql": "ok", "redis": "ok"}),
        content_type="application/json",
    )
