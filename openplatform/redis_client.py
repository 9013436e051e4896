"""Redis connections: one pool per process for sync code, one per event loop for async code.

Every caller gets its client here, so pools are shared, sockets are reused across requests and
a forked worker (gunicorn, Celery) never inherits its parent's sockets.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from django.conf import settings

_lock = threading.Lock()
_sync: tuple[int, redis.Redis] | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def get_redis() -> redis.Redis:
    """The process's Redis client (thread-safe pool; recreated after a fork)."""
    global _sync
    pid = os.getpid()
    current = _sync
    if current is None or current[0] != pid:
        with _lock:
            if _sync is None or _sync[0] != pid:
                client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_connect_timeout=2,
                    socket_timeout=30,
                    health_check_interval=30,
                    max_connections=200,
                )
                _sync = (pid, client)
            current = _sync
    return current[1]


class PackedConnection(aioredis.Connection):
    """redis-py's async connection, packing commands with hiredis's C packer.

    The async connection packs every argument in Python, which costs more than the rest of a
    publish (a publish script call has some 25 arguments); the sync connection already uses
    hiredis for this. Multi-word command names ("SCRIPT LOAD") are split as redis-py does."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def _async_kwargs() -> dict[str, Any]:
    return {
        "connection_class": PackedConnection,
        "socket_connect_timeout": 2,
        "socket_timeout": 30,
        "health_check_interval": 30,
    }


def get_async_redis() -> aioredis.Redis:
    """The Redis client of the running event loop (each loop has its own pool)."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        # Blocking: a burst beyond the pool waits for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=64, timeout=5, **_async_kwargs()
        )
        client = _async[loop] = aioredis.Redis(connection_pool=pool)
    return client


class ScriptLane:
    """The data plane's road to Redis: one command, one reply, on an idle connection.

    redis-py's client wraps each command in retries, a pool lock, timeouts and metrics, which
    together cost more than the command itself on a warm publish. A script call needs none of
    it: the event loop owns these connections, so an idle one is simply popped and pushed
    back. A call is never retried: a publish whose reply was lost may have been stored, so the
    caller gets the error (a 503) and decides. A connection whose call failed mid-way (broken,
    timed out, cancelled by a client that left) is closed rather than reused.

    At most ``limit`` calls run at once per loop; a burst beyond that (a thousand long polls
    waking together) waits on the semaphore instead of opening ever more connections.
    """

    def __init__(self, limit: int = 200) -> None:
        pool = aioredis.ConnectionPool.from_url(settings.REDIS_URL, **_async_kwargs())
        self._make = pool.make_connection  # honours the URL: host, TLS, password, database
        self._idle: list[aioredis.Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def call(self, *args: Any) -> Any:
        async with self._slots:
            connection = self._idle.pop() if self._idle else self._make()
            try:
                await connection.send_command(*args, check_health=False)
                reply = await connection.read_response()
            except redis.ResponseError:
                self._idle.append(connection)  # an error reply, read whole: still usable
                raise
            except BaseException:
                await asyncio.shield(connection.disconnect())
                raise
            self._idle.append(connection)
            return reply


_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ScriptLane] = (
    weakref.WeakKeyDictionary()
)


def get_script_lane() -> ScriptLane:
    """The running loop's :class:`ScriptLane`."""
    loop = asyncio.get_running_loop()
    lane = _lanes.get(loop)
    if lane is None:
        lane = _lanes[loop] = ScriptLane()
    return lane


def reset_clients() -> None:
    """Forget every pool (used by tests between Redis databases)."""
    global _sync
    with _lock:
        _sync = None
    _async.clear()
    _lanes.clear()
