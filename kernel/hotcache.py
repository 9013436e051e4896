"""The hot-path cache: what the data plane needs to know without asking PostgreSQL.

Three levels: this process's memory (trusted for ``HOT_CACHE_TTL_SECONDS``), Redis (shared by
every process; written by the services whenever the source row changes), and PostgreSQL (the
truth; read only on a miss). A change is pushed to Redis when its transaction commits, so every
process sees it at most one local TTL later: that bounds how long a revoked API key still works.
Misses are cached too (briefly), so unknown names cannot make every request query PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from kernel.redis_client import get_async_redis, get_redis
from kernel.redis_keys import cache_key

Loader = Callable[[str], dict[str, Any] | None]

_MISS = b"null"


class HotCache:
    """A read-through cache of JSON documents named by ``<namespace>:<ident>``.

    ``loader(ident)`` reads the truth from PostgreSQL and returns a JSON-able dict, or None
    when there is no such thing. ``push(ident, doc)`` is how writers publish a change.
    """

    def __init__(
        self,
        namespace: str,
        loader: Loader,
        *,
        redis_ttl: int = 3600,
        miss_ttl: int = 30,
    ) -> None:
        self.namespace = namespace
        self.loader = loader
        self.redis_ttl = redis_ttl
        self.miss_ttl = miss_ttl
        self._local: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._inflight: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Future[dict[str, Any] | None]]
        ] = weakref.WeakKeyDictionary()

    def _key(self, ident: str) -> str:
        return cache_key(self.namespace, ident)

    def _local_get(self, ident: str) -> tuple[bool, dict[str, Any] | None]:
        hit = self._local.get(ident)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def _remember(self, ident: str, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if len(self._local) > 100_000:  # bound memory under a flood of distinct names
            self._local.clear()
        self._local[ident] = (time.monotonic() + settings.HOT_CACHE_TTL_SECONDS, doc)
        return doc

    def _encode(self, doc: dict[str, Any] | None) -> tuple[bytes, int]:
        if doc is None:
            return _MISS, self.miss_ttl
        return orjson.dumps(doc), self.redis_ttl

    def get(self, ident: str) -> dict[str, Any] | None:
        """The document for ``ident`` (None if there is none), from the nearest level."""
        found, doc = self._local_get(ident)
        if found:
            return doc
        raw = get_redis().get(self._key(ident))
        if raw is None:
            doc = self.loader(ident)
            value, ttl = self._encode(doc)
            get_redis().set(self._key(ident), value, ex=ttl)
        else:
            doc = orjson.loads(raw)
        return self._remember(ident, doc)

    async def aget(self, ident: str) -> dict[str, Any] | None:
        """:meth:`get` for async code. Concurrent misses of one ident in one event loop share
        a single fetch: when the local copy expires under load, a thousand requests wait for
        one Redis read instead of making a thousand."""
        found, doc = self._local_get(ident)
        if found:
            return doc
        loop = asyncio.get_running_loop()
        inflight = self._inflight.setdefault(loop, {})
        pending = inflight.get(ident)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = inflight[ident] = loop.create_future()
        try:
            doc = await self._afetch(ident)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # the waiters (if any) get it; nobody else need retrieve it
            raise
        else:
            pending.set_result(doc)
            return doc
        finally:
            del inflight[ident]

    async def _afetch(self, ident: str) -> dict[str, Any] | None:
        redis = get_async_redis()
        raw = await redis.get(self._key(ident))
        if raw is None:
            doc = await sync_to_async(self.loader, thread_sensitive=True)(ident)
            value, ttl = self._encode(doc)
            await redis.set(self._key(ident), value, ex=ttl)
        else:
            doc = orjson.loads(raw)
        return self._remember(ident, doc)

    def push(self, ident: str, doc: dict[str, Any] | None) -> None:
        """Publish the new state of ``ident`` (None: it is gone) to every process."""
        value, ttl = self._encode(doc)
        get_redis().set(self._key(ident), value, ex=ttl)
        self._local.pop(ident, None)

    def forget_local(self) -> None:
        """Drop this process's copies (tests; never needed in production)."""
        self._local.clear()


_registry: list[HotCache] = []


def register(cache: HotCache) -> HotCache:
    _registry.append(cache)
    return cache


def forget_all_local() -> None:
    for cache in _registry:
        cache.forget_local()
