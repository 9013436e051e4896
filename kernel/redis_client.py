"""Redis connections: one pool per process for sync code, one per event loop for async code.

Every caller gets its client here, so pools are shared, sockets are reused across requests and
a forked worker (gunicorn, Celery) never inherits its parent's sockets.

Every client gives up on Redis after ``settings.REDIS_TIMEOUT_SECONDS`` (connecting, waiting for
a pooled connection, waiting for the reply) and raises ``redis.TimeoutError`` or
``redis.ConnectionError``, which the API answers with a 503: a stopped or unreachable server
costs a request that long, never a worker hung for good.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
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


def _timeout() -> float:
    return float(settings.REDIS_TIMEOUT_SECONDS)


def _deadline_error(seconds: float) -> redis.TimeoutError:
    return redis.TimeoutError(f"Redis did not answer within {seconds:g} s")


def get_redis() -> redis.Redis:
    """The process's Redis client (thread-safe pool; recreated after a fork).

    For the control plane and Celery. The pool replaces an idle connection the server has
    closed (a restart) before handing it out, and pings one idle for 30 s; a command is not
    retried, so a script call is never sent twice."""
    global _sync
    pid = os.getpid()
    current = _sync
    if current is None or current[0] != pid:
        with _lock:
            if _sync is None or _sync[0] != pid:
                client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_connect_timeout=_timeout(),
                    socket_timeout=_timeout(),
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


class DeadlineRedis(aioredis.Redis):
    """redis-py's async client with one deadline per command.

    The pool's wait, the connect and the reply each have their own timeout, so a hung server
    could hold a command for their sum; this bounds the whole command by ``deadline`` seconds
    and raises ``redis.TimeoutError`` past it (the API's 503). redis-py closes a connection
    whose command was cancelled mid-way, so a late reply is never read as the next one's.
    Pub/sub does not go through here: its reads block by design."""

    def __init__(self, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            async with asyncio.timeout(self.deadline):
                # redis-py leaves execute_command unannotated
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except TimeoutError as exc:  # the builtin one, raised by asyncio.timeout
            raise _deadline_error(self.deadline) from exc


def get_async_redis() -> aioredis.Redis:
    """The Redis client of the running event loop (each loop has its own pool).

    Every command answers or raises within ``settings.REDIS_TIMEOUT_SECONDS`` (see
    :class:`DeadlineRedis`); the pool replaces an idle connection the server has closed
    before handing it out, so a Redis restart costs no request."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        timeout = _timeout()
        # Blocking: a burst beyond the pool waits for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=64,
            timeout=timeout,
            connection_class=PackedConnection,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
        )
        client = _async[loop] = DeadlineRedis(connection_pool=pool, deadline=timeout)
    return client


def _reusable(connection: aioredis.Connection) -> bool:
    """Whether an idle lane connection is still open, judged without a round trip.

    When the server closes a connection (a restart, ``CLIENT KILL``, its idle timeout) the
    event loop sees the EOF (or a reset) as soon as it polls the socket, and asyncio records
    it on the connection's stream reader and transport. Sending on such a connection would
    fail only after the command left, when nobody can tell whether it ran; checking here
    means the command goes out on a fresh connection instead."""
    reader, writer = connection._reader, connection._writer
    return not (
        reader is None
        or writer is None
        or reader.at_eof()
        or reader.exception() is not None
        or writer.is_closing()
    )


class ScriptLane:
    """The data plane's road to Redis: one command, one reply, on an idle connection.

    redis-py's client wraps each command in retries, a pool lock, timeouts and metrics, which
    together cost more than the command itself on a warm publish. A script call needs none of
    it: the event loop owns these connections, so an idle one is simply popped and pushed
    back. A call is never retried: a publish whose reply was lost may have been stored, so the
    caller gets the error (a 503) and decides. A connection whose call failed mid-way (broken,
    timed out, cancelled by a client that left) is closed rather than reused.

    Reconnecting is safe because it happens before anything is sent: an idle connection the
    server has closed (a Redis restart) is dropped for a new one (see :func:`_reusable`; no
    PING per call), and a connect that fails sent nothing and raises ``ConnectionError``.

    At most ``limit`` calls run at once per loop; a burst beyond that (a thousand long polls
    waking together) waits on the semaphore instead of opening ever more connections. One
    deadline of ``settings.REDIS_TIMEOUT_SECONDS`` covers the whole call, that wait
    included; past it the call raises ``redis.TimeoutError``.
    """

    def __init__(self, limit: int = 200) -> None:
        self.timeout = _timeout()
        pool = aioredis.ConnectionPool.from_url(
            settings.REDIS_URL,
            connection_class=PackedConnection,
            socket_connect_timeout=self.timeout,
            # No per-read or per-write timeout: the call's one deadline covers both, and
            # redis-py would spend a timer and (for the write) a task on each call for them.
            socket_timeout=None,
            health_check_interval=0,
        )
        # honours the URL: host, TLS, password, database
        self._make: Callable[[], aioredis.Connection] = pool.make_connection
        self._idle: list[aioredis.Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply; raise ``redis.ConnectionError`` or
        ``redis.TimeoutError`` when Redis cannot be reached or does not answer in time (the
        command may then have run), ``redis.ResponseError`` for an error reply."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._slots:
                    return await self._call(args)
        except TimeoutError as exc:  # the builtin one, raised by asyncio.timeout
            raise _deadline_error(self.timeout) from exc

    async def _call(self, args: tuple[Any, ...]) -> Any:
        connection = await self._take()
        try:
            if not connection.is_connected:
                await connection.connect()  # nothing is sent before this succeeds
            await connection.send_command(*args, check_health=False)
            reply = await connection.read_response()
        except redis.ResponseError:
            self._idle.append(connection)  # an error reply, read whole: still usable
            raise
        except BaseException:
            await asyncio.shield(connection.disconnect(nowait=True))
            raise
        self._idle.append(connection)
        return reply

    async def _take(self) -> aioredis.Connection:
        """An open idle connection, or a new (not yet connected) one."""
        while self._idle:
            connection = self._idle.pop()
            if _reusable(connection):
                return connection
            await connection.disconnect(nowait=True)  # the server closed it: free the socket
        return self._make()


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


async def close_loop_clients() -> None:
    """Close the running loop's connections (its pool and its script lane). For sync code
    that runs a loop of its own for one call (the console's views): once that loop is gone,
    nothing else would close them."""
    loop = asyncio.get_running_loop()
    client = _async.pop(loop, None)
    if client is not None:
        await client.connection_pool.disconnect()
    lane = _lanes.pop(loop, None)
    if lane is not None:
        while lane._idle:
            await lane._idle.pop().disconnect(nowait=True)
