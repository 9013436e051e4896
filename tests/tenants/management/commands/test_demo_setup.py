"""./dev manage demo_setup: the demo tenant of `./dev up`, created once and reused."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ALL_SCOPES, ApiKey, AuditEvent, Membership, Tenant, User
from tenants.principals import authenticate
from tests.factories import TenantCtx, make_key

pytestmark = pytest.mark.django_db

PASSWORD = "demo-password-1"


def run(*args: str) -> dict:
    out = StringIO()
    call_command("demo_setup", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def counts() -> tuple[int, int, int, int, int]:
    return (
        Tenant.objects.count(),
        User.objects.count(),
        Membership.all_tenants.count(),
        ApiKey.all_tenants.count(),
        AuditEvent.all_tenants.count(),
    )


def test_demo_setup_creates_the_demo_tenant() -> None:
    """The first run creates tenant "demo", its owner with the given password, and an
    all-scopes key for it."""
    data = run("--password", PASSWORD)

    assert set(data) == {"tenant", "username", "password", "api_key"}
    assert data["tenant"] == "demo"
    assert data["username"] == "demo@openplatform.local"
    assert data["password"] == PASSWORD
    assert User.objects.get(email="demo@openplatform.local").check_password(PASSWORD)
    principal = authenticate(f"Bearer {data['api_key']}")
    assert principal.tenant_id == str(Tenant.objects.get(slug="demo").id)
    assert principal.scopes == frozenset(ALL_SCOPES)


def test_demo_setup_is_idempotent_with_reuse_key() -> None:
    """A second run with the same password and --reuse-key returns the same key and creates
    no tenant, user, membership, key or audit event."""
    first = run("--password", PASSWORD)
    before = counts()

    second = run("--password", PASSWORD, "--reuse-key", first["api_key"])

    assert second == first
    assert counts() == before


def test_demo_setup_without_reuse_key_keeps_the_tenant() -> None:
    """Without --reuse-key a new key is issued, but the tenant and owner are reused."""
    first = run("--password", PASSWORD)

    second = run("--password", PASSWORD)

    assert second["api_key"] != first["api_key"]
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert User.objects.filter(email="demo@openplatform.local").count() == 1
    assert ApiKey.objects.for_tenant(Tenant.objects.get(slug="demo")).count() == 2


def test_demo_setup_new_password_replaces_the_old() -> None:
    first = run("--password", PASSWORD)

    second = run("--password", "another-password-2", "--reuse-key", first["api_key"])

    assert second["api_key"] == first["api_key"]
    user = User.objects.get(email="demo@openplatform.local")
    assert user.check_password("another-password-2")
    assert not user.check_password(PASSWORD)


def test_demo_setup_does_not_reuse_an_unusable_key(
    acme: TenantCtx, django_capture_on_commit_callbacks
) -> None:
    """--reuse-key is ignored (a fresh key is issued) for a revoked key, a key of another
    tenant, a key without every scope, and a string that is not a key."""
    run("--password", PASSWORD)
    demo = Tenant.objects.get(slug="demo")
    narrow = make_key(tenant=demo, name="narrow", scopes=["publish"])
    revoked = make_key(tenant=demo, name="revoked", scopes=ALL_SCOPES)
    with django_capture_on_commit_callbacks(execute=True):
        services.key_revoke(
            authority=OPERATOR, tenant=demo, key_id=str(revoked.key.id), actor="test"
        )

    for unusable in (revoked.secret, acme.key, narrow.secret, "not-a-key"):
        keys = ApiKey.objects.for_tenant(demo).count()
        data = run("--password", PASSWORD, "--reuse-key", unusable)
        assert data["api_key"] != unusable
        assert authenticate(f"Bearer {data['api_key']}").tenant_id == str(demo.id)
        assert ApiKey.objects.for_tenant(demo).count() == keys + 1
    assert Tenant.objects.filter(slug="demo").count() == 1
