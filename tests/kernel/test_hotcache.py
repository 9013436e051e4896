"""The hot cache under a burst: concurrent misses share one fetch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel.hotcache import HotCache
from kernel.redis_client import get_redis
from tests.helpers import record_async_redis_commands


async def test_concurrent_misses_share_one_redis_read(monkeypatch: Any) -> None:
    """A thousand concurrent reads of an expired entry make one Redis GET, and all of them
    get the document."""
    loads: list[str] = []

    def loader(ident: str) -> dict[str, Any]:
        loads.append(ident)
        return {"ident": ident}

    cache = HotCache("burst-test", loader)
    get_redis().set(cache._key("k"), b'{"ident": "k"}', ex=60)
    sent = record_async_redis_commands(monkeypatch)
    docs = await asyncio.gather(*(cache.aget("k") for _ in range(1000)))
    assert docs == [{"ident": "k"}] * 1000
    assert sent.count("GET") == 1  # besides connection set-up (HELLO, SELECT, PING)
    assert loads == []


async def test_a_failed_fetch_fails_every_waiter_and_is_not_remembered() -> None:
    """When the shared fetch fails, every waiter sees the error, and the next read tries
    again."""
    calls = 0

    def loader(ident: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise RuntimeError("database down")

    cache = HotCache("failing-test", loader)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kernel.hotcache.sync_to_async", lambda f, **kw: _async(f))
        results = await asyncio.gather(
            *(cache.aget("x") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert calls == 1
        with pytest.raises(RuntimeError):
            await cache.aget("x")
        assert calls == 2


def _async(function: Any) -> Any:
    async def call(*args: Any) -> Any:
        await asyncio.sleep(0)
        return function(*args)

    return call
