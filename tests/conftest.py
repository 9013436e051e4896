"""The suite runs against a real PostgreSQL and a real Redis (DATABASE_URL / REDIS_URL, or the
embedded servers `./dev test` starts). Every test starts and ends with an empty Redis database
and no process-local cache, so no test sees another's messages or cached keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from kernel.hotcache import forget_all_local
from kernel.redis_client import get_redis, reset_clients
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ALL_SCOPES, Tenant


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    reset_clients()
    forget_all_local()
    get_redis().flushdb()
    yield
    get_redis().flushdb()
    forget_all_local()


@dataclass
class TenantCtx:
    """A tenant with an all-scopes key and a client that sends it."""

    tenant: Tenant
    key: str
    client: Client

    def with_key(self, key: str) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def make_tenant(name: str, **key_options: Any) -> TenantCtx:
    created = services.tenant_create(name=name, owner_email=f"owner@{name.lower()}.test")
    key = services.key_create(
        authority=OPERATOR,
        tenant=created.tenant,
        name="all",
        scopes=key_options.pop("scopes", list(ALL_SCOPES)),
        actor="test",
        **key_options,
    )
    return TenantCtx(
        tenant=created.tenant,
        key=key.secret,
        client=Client(HTTP_AUTHORIZATION=f"Bearer {key.secret}"),
    )


@pytest.fixture
def acme(db: Any) -> TenantCtx:
    return make_tenant("Acme")


@pytest.fixture
def globex(db: Any) -> TenantCtx:
    """A second tenant, for isolation tests."""
    return make_tenant("Globex")


def key_for(ctx: TenantCtx, scopes: list[str], resources: list[str] | None = None) -> Client:
    """A client for a new key of ctx's tenant with just these scopes and resources."""
    created = services.key_create(
        authority=OPERATOR,
        tenant=ctx.tenant,
        name="limited",
        scopes=scopes,
        resources=resources or [],
        actor="test",
    )
    return ctx.with_key(created.secret)
