"""./dev manage tenant_create NAME --owner EMAIL [--json]"""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants.models import ALL_SCOPES, ApiKey, AuditEvent, Membership, Plan, Role, Tenant, User
from tenants.principals import authenticate

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("tenant_create", *args, stdout=out)
    return out.getvalue()


def counts() -> tuple[int, int, int, int, int]:
    return (
        Tenant.objects.count(),
        User.objects.count(),
        Membership.all_tenants.count(),
        ApiKey.all_tenants.count(),
        AuditEvent.all_tenants.count(),
    )


def test_tenant_create_prints_tenant_owner_and_a_working_key() -> None:
    """--json prints the tenant, its owner and an all-scopes key that authenticates for that
    tenant; the owner is the tenant's OWNER and the actions are audited as the CLI."""
    data = json.loads(run("Initech", "--owner", "Boss@Initech.test", "--json"))

    assert set(data) == {"tenant", "tenant_id", "owner", "api_key", "api_key_id"}
    assert data["tenant"] == "initech"
    assert data["owner"] == "boss@initech.test"
    tenant = Tenant.objects.get(slug="initech")
    assert data["tenant_id"] == str(tenant.id)
    principal = authenticate(f"Bearer {data['api_key']}")
    assert principal.tenant_id == str(tenant.id)
    assert principal.key_id == data["api_key_id"]
    assert principal.scopes == frozenset(ALL_SCOPES)
    assert principal.resources == ()
    membership = Membership.objects.for_tenant(tenant).get()
    assert (membership.user.email, membership.role) == ("boss@initech.test", Role.OWNER)
    events = AuditEvent.objects.for_tenant(tenant).order_by("id")
    assert [(e.actor, e.action) for e in events] == [
        ("operator:cli", "tenant.create"),
        ("operator:cli", "key.create"),
    ]


def test_tenant_create_with_password_plan_and_slug() -> None:
    """--password sets the owner's console password; --plan and --slug are honoured."""
    Plan.objects.create(slug="gold", name="Gold")
    data = json.loads(
        run(
            "Initech Corp",
            "--owner",
            "boss@initech.test",
            "--password",
            "correct horse battery",
            "--plan",
            "gold",
            "--slug",
            "ini",
            "--json",
        )
    )

    tenant = Tenant.objects.get(slug="ini")
    assert data["tenant"] == "ini"
    assert tenant.name == "Initech Corp"
    assert tenant.plan.slug == "gold"
    assert User.objects.get(email="boss@initech.test").check_password("correct horse battery")


def test_tenant_create_plain_output_lists_the_fields() -> None:
    lines = run("Initech", "--owner", "boss@initech.test").splitlines()

    assert [line.split()[0] for line in lines] == [
        "tenant",
        "tenant_id",
        "owner",
        "api_key",
        "api_key_id",
    ]
    assert lines[0].split() == ["tenant", "initech"]


def test_tenant_create_twice_fails_and_creates_nothing_more() -> None:
    """The same name again is a CommandError; no tenant, user, key or audit event is added."""
    run("Initech", "--owner", "boss@initech.test", "--json")
    before = counts()

    with pytest.raises(CommandError, match=re.escape("A tenant 'initech' already exists.")):
        run("Initech", "--owner", "other@initech.test", "--json")

    assert counts() == before
    assert not User.objects.filter(email="other@initech.test").exists()


def test_tenant_create_unknown_plan_fails_and_creates_nothing() -> None:
    before = counts()

    with pytest.raises(CommandError, match=re.escape("No plan 'platinum'.")):
        run("Initech", "--owner", "boss@initech.test", "--plan", "platinum")

    assert counts() == before
