"""Liveness and readiness for load balancers: no API key, no tenant."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable

from django.db import connection
from django.http import HttpRequest, HttpResponse

from api.errors import problem_response
from api.renderers import dumps
from kernel.redis_client import get_async_redis

READY_TIMEOUT_SECONDS = 2.0

# The PostgreSQL probe in flight, if any (see _postgres_probe).
_probe: concurrent.futures.Future[None] | None = None


async def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process serves requests."""
    return HttpResponse(dumps({"status": "ok"}), content_type="application/json")


def _postgres_ok() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # This thread's connection goes back to the pool (or is closed) after every probe,
        # so an idle probe thread never holds one.
        connection.close()


def _start_probe() -> concurrent.futures.Future[None]:
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            _postgres_ok()
        except BaseException as exc:  # the waiting request reports it as not ready
            future.set_exception(exc)
        else:
            future.set_result(None)

    # A daemon thread: a probe stuck on a hung database must not keep the process from exiting.
    threading.Thread(target=run, name="readyz-postgres", daemon=True).start()
    return future


async def _postgres_probe() -> None:
    """Run the PostgreSQL probe in a thread of its own, one that can be abandoned.

    asgiref's sync_to_async cannot be: cancelling it still waits for the sync call, so a probe
    stuck in the connection pool's getconn (up to its 10 s timeout) or on a hung server held
    /readyz, and the thread every sync view shares, until it returned. A probe still running
    from an earlier request is awaited rather than joined by another, so a stuck database
    costs one thread, not one per load-balancer check."""
    global _probe
    if _probe is None or _probe.done():
        _probe = _start_probe()
    await asyncio.wrap_future(_probe)


async def _failed(name: str, probe: Awaitable[object]) -> str | None:
    """``name`` if ``probe`` fails or takes longer than READY_TIMEOUT_SECONDS, else None."""
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_SECONDS)
    except Exception:  # any failure means not ready; the detail names the service
        return name
    return None


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 only when PostgreSQL and Redis both answer; otherwise 503 naming what failed.
    The two probes run at once, so the answer comes within READY_TIMEOUT_SECONDS."""
    results = await asyncio.gather(
        _failed("postgresql", _postgres_probe()), _failed("redis", get_async_redis().ping())
    )
    failures = [name for name in results if name is not None]
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
