"""The suite runs against a real PostgreSQL and a real Redis (DATABASE_URL / REDIS_URL, or the
embedded servers `./dev test` starts). Every test starts and ends with an empty Redis database
and no process-local cache, so no test sees another's messages or cached keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kernel.hotcache import forget_all_local
from kernel.redis_client import get_redis, reset_clients
from tests.factories import TenantCtx, make_tenant

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    reset_clients()
    forget_all_local()
    get_redis().flushdb()
    yield
    get_redis().flushdb()
    forget_all_local()


@pytest.fixture
def acme(db: Any) -> TenantCtx:
    return make_tenant(name="Acme")


@pytest.fixture
def globex(db: Any) -> TenantCtx:
    """A second tenant, for isolation tests."""
    return make_tenant(name="Globex")


@pytest.fixture
def redis_down(settings: Any) -> Iterator[str]:
    """Point every Redis client at a port nobody listens on, with cold local caches; the
    real Redis (whose URL this yields) comes back when the test ends."""
    original = settings.REDIS_URL
    settings.REDIS_URL = CLOSED_PORT_REDIS
    reset_clients()
    forget_all_local()
    yield original
    settings.REDIS_URL = original
    reset_clients()
