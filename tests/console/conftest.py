"""Console fixtures: people with a role in a tenant, signed in with Django's test client."""

from __future__ import annotations

import pytest
from django.test import Client

from tenants.models import Role
from tests.factories import TenantCtx, make_member, signed_in


@pytest.fixture
def owner(acme: TenantCtx) -> Client:
    """Acme's owner, signed in."""
    return signed_in(acme.owner)


@pytest.fixture
def viewer(acme: TenantCtx) -> Client:
    """A viewer of Acme, signed in."""
    return signed_in(make_member(tenant=acme.tenant, email="viewer@acme.test", role=Role.VIEWER))
