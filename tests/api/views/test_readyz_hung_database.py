"""/readyz keeps its 2 s promise when PostgreSQL hangs.

The database is "hung" for real: the default database's address points, for the test, at a
listening socket that accepts connections and never says a word, as a stopped server or a full
connection pool would behave from the probe's side.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from django.db import connections

from api.views.health import READY_TIMEOUT_SECONDS
from openplatform.asgi import application

pytestmark = pytest.mark.django_db

MARGIN = 1.0  # what the answer may take beyond the timeout on a loaded CI machine


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@contextlib.contextmanager
def database_hung() -> Iterator[None]:
    """New connections of the default database go to a server that never answers; the real
    one comes back (and the connects still waiting fail) when the block ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes each connect; nobody ever reads the startup
    # Every thread's connection shares this dict; only connections opened from now on (the
    # probe's, in its own thread) use the new address.
    database = connections["default"].settings_dict
    saved = database["HOST"], database["PORT"]
    database["HOST"], database["PORT"] = "127.0.0.1", str(listener.getsockname()[1])
    try:
        yield
    finally:
        database["HOST"], database["PORT"] = saved
        listener.close()  # the connects waiting in its backlog get a reset


def probe_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "readyz-postgres")


async def test_readyz_answers_503_within_its_timeout_while_postgres_hangs(
    client: httpx.AsyncClient,
) -> None:
    """A probe stuck on the database does not hold /readyz: it answers 503 naming PostgreSQL
    within READY_TIMEOUT_SECONDS, and so does the next probe, which waits on the same stuck
    one instead of starting another thread."""
    with database_hung():
        for _ in range(2):
            started = time.monotonic()
            response = await client.get("/readyz")
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "unavailable"
            assert response.json()["detail"] == "Not ready: postgresql did not answer."
            assert elapsed < READY_TIMEOUT_SECONDS + MARGIN
        assert probe_threads() == 1


async def test_readyz_is_200_again_once_postgres_answers(client: httpx.AsyncClient) -> None:
    """After a hang ends, the next probes reach the database again and /readyz is 200."""
    with database_hung():
        assert (await client.get("/readyz")).status_code == 503

    deadline = time.monotonic() + 10
    while (response := await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, response.text
    assert response.json() == {"status": "ready", "postgresql": "ok", "redis": "ok"}
    deadline = time.monotonic() + 10
    while probe_threads():  # the probe thread ends with its probe, its connection closed
        assert time.monotonic() < deadline
        time.sleep(0.01)
