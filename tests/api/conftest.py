"""Fixtures for the HTTP edge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernel.hotcache import forget_all_local
from kernel.redis_client import reset_clients

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings) -> Iterator[str]:
    """Point every Redis client at a port nobody listens on, with cold local caches; the
    real Redis (whose URL this yields) comes back when the test ends."""
    original = settings.REDIS_URL
    settings.REDIS_URL = CLOSED_PORT_REDIS
    reset_clients()
    forget_all_local()
    yield original
    settings.REDIS_URL = original
    reset_clients()
