"""Redis connections: one pool per process for sync code, one per event loop for async code.

Every caller gets its client here, so pools are shared, sockets are reused across requests and
a forked worker (gunicorn, Celery) never inherits its parent's sockets.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

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


def get_async_redis() -> aioredis.Redis:
    """The Redis client of the running event loop (each loop has its own pool)."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        # A blocking pool: a burst of coroutines (a thousand long polls waking at once)
        # queues for a connection instead of failing when the pool is exhausted.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=30,
            health_check_interval=30,
            max_connections=100,
            timeout=10,
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
