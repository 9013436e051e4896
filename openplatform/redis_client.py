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


# Each event loop holds at most this many Redis connections; callers beyond that wait for one
# (a thousand long polls waking at once), which the pool's own bookkeeping makes expensive, so
# they wait on a semaphore first (see async_slot) and the pool itself never runs dry.
MAX_ASYNC_CONNECTIONS = 256
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def async_slot() -> asyncio.Semaphore:
    """The running loop's semaphore bounding concurrent Redis calls of the data plane; take it
    around a call so bursts queue here instead of failing for want of a connection."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        # leave room for the pub/sub connection and the hot cache's reads
        slot = _slots[loop] = asyncio.Semaphore(MAX_ASYNC_CONNECTIONS - 16)
    return slot


def get_async_redis() -> aioredis.Redis:
    """The Redis client of the running event loop (each loop has its own pool)."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        pool = aioredis.ConnectionPool.from_url(
            settings.REDIS_URL,
            connection_class=PackedConnection,
            socket_connect_timeout=2,
            socket_timeout=30,
            health_check_interval=30,
            max_connections=MAX_ASYNC_CONNECTIONS,
        )
        client = aioredis.Redis(connection_pool=pool)
        _async[loop] = client
    return client


def reset_clients() -> None:
    """Forget every pool (used by tests between Redis databases)."""
    global _sync
    with _lock:
        _sync = None
    _async.clear()
    _slots.clear()
