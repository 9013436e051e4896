"""Console fixtures: people with a role in a tenant, signed in with Django's test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from kernel.hotcache import forget_all_local
from kernel.redis_client import reset_clients
from tenants.models import Membership, Role, Tenant, User
from tests.conftest import TenantCtx

PASSWORD = "correct-horse-battery-7"


def member(tenant: Tenant, email: str, role: Role) -> User:
    """A user with a password and ``role`` in ``tenant`` (an existing user joins too)."""
    user = User.objects.filter(email=email).first() or User.objects.create_user(email, PASSWORD)
    Membership.all_tenants.create(tenant=tenant, user=user, role=role)
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def owner_of(ctx: TenantCtx) -> User:
    return Membership.objects.for_tenant(ctx.tenant).get(role=Role.OWNER).user


@pytest.fixture
def owner(acme: TenantCtx) -> Client:
    """Acme's owner, signed in."""
    return signed_in(owner_of(acme))


@pytest.fixture
def viewer(acme: TenantCtx) -> Client:
    """A viewer of Acme, signed in."""
    return signed_in(member(acme.tenant, "viewer@acme.test", Role.VIEWER))


@pytest.fixture
def redis_down(settings: Any) -> Iterator[None]:
    """Every Redis client points at a port nobody listens on until the test ends."""
    original = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    reset_clients()
    forget_all_local()
    yield
    settings.REDIS_URL = original
    reset_clients()
