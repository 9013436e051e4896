"""/healthz and /readyz, the load balancer's probes: no API key needed."""

from __future__ import annotations

import pytest
from django.test import Client

from kernel.redis_client import reset_clients
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db


def test_healthz_is_200_without_a_key() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_postgres_and_redis_answer() -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "postgresql": "ok", "redis": "ok"}


def test_readyz_is_503_when_redis_is_down(redis_down: str) -> None:
    """With Redis unreachable, /readyz is a 503 unavailable problem naming Redis (and not
    PostgreSQL), with Retry-After."""
    response = Client().get("/readyz")

    body = assert_problem(response, 503, "unavailable")
    assert body["detail"] == "Not ready: redis did not answer."
    assert response["Retry-After"] == "5"


def test_healthz_stays_200_when_redis_is_down(redis_down: str) -> None:
    """Liveness does not depend on the backing services: a restart would not fix them."""
    assert Client().get("/healthz").status_code == 200


def test_readyz_recovers_when_redis_returns(redis_down: str, settings) -> None:
    """Readiness is checked on every probe: once Redis answers again, /readyz is 200."""
    assert Client().get("/readyz").status_code == 503

    settings.REDIS_URL = redis_down
    reset_clients()

    assert Client().get("/readyz").status_code == 200
