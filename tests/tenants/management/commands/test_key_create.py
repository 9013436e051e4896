"""./dev manage key_create TENANT --name N [--scope S ...] [--resource P ...] [--json]"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent
from tenants.principals import authenticate
from tests.factories import TenantCtx

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("key_create", *args, stdout=out)
    return out.getvalue()


def test_key_create_with_scope_and_resource(acme: TenantCtx) -> None:
    """The printed key works with exactly the scopes and resources given, and the creation is
    audited as the CLI."""
    data = json.loads(
        run(
            "acme",
            "--name",
            "ci",
            "--scope",
            "publish",
            "--scope",
            "consume",
            "--resource",
            "queue:orders",
            "--json",
        )
    )

    assert set(data) == {"tenant", "id", "name", "scopes", "resources", "api_key"}
    assert (data["tenant"], data["name"]) == ("acme", "ci")
    assert data["scopes"] == ["publish", "consume"]
    assert data["resources"] == ["queue:orders"]
    principal = authenticate(f"Bearer {data['api_key']}")
    assert principal.key_id == data["id"]
    assert principal.tenant_id == str(acme.tenant.id)
    assert principal.scopes == frozenset({"publish", "consume"})
    assert principal.resources == ("queue:orders",)
    event = AuditEvent.objects.for_tenant(acme.tenant).get(target_id=data["id"])
    assert (event.actor, event.action) == ("operator:cli", "key.create")


def test_key_create_defaults_to_all_scopes(acme: TenantCtx) -> None:
    data = json.loads(run("acme", "--name", "admin", "--json"))

    assert data["scopes"] == ["publish", "consume", "manage"]
    assert data["resources"] == []


def test_key_create_expiry(acme: TenantCtx) -> None:
    data = json.loads(run("acme", "--name", "temp", "--expires-in-days", "7", "--json"))

    key = ApiKey.objects.for_tenant(acme.tenant).get(pk=data["id"])
    assert abs(key.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--name", "k"], re.escape("No tenant 'nope'.")),
        (["acme", "--name", "k", "--scope", "root"], "invalid choice: 'root'"),
        (["acme", "--name", "k", "--resource", "orders"], "Invalid resource patterns"),
        (["acme", "--name", "   "], "A key needs a name"),
    ],
)
def test_key_create_errors_create_nothing(acme: TenantCtx, args: list[str], message: str) -> None:
    before = ApiKey.all_tenants.count(), AuditEvent.all_tenants.count()

    with pytest.raises(CommandError, match=message):
        run(*args)

    assert (ApiKey.all_tenants.count(), AuditEvent.all_tenants.count()) == before
