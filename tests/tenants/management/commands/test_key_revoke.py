"""./dev manage key_revoke TENANT KEY_ID_OR_PREFIX"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from kernel.errors import Unauthenticated
from tenants.models import AuditEvent
from tenants.principals import authenticate
from tests.factories import TenantCtx, make_key
from tests.helpers import key_of

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("key_revoke", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("ident", ["id", "prefix", "token"])
def test_key_revoke_by_id_prefix_or_whole_token(
    acme: TenantCtx, django_capture_on_commit_callbacks, ident: str
) -> None:
    """The key can be named by its id, its prefix or the whole token; it is revoked, audited
    as the CLI and refused from then on."""
    created = make_key(tenant=acme.tenant, name="ci")
    authenticate(f"Bearer {created.secret}")  # cached before the revocation
    name = {"id": str(created.key.id), "prefix": created.key.prefix, "token": created.secret}

    with django_capture_on_commit_callbacks(execute=True):
        output = run("acme", name[ident])

    assert re.fullmatch(
        rf"revoked ci \(op_{created.key.prefix}_…\) at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n",
        output,
    )
    created.key.refresh_from_db()
    assert created.key.revoked_at is not None
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="key.revoke")
    assert (event.actor, event.target_id) == ("operator:cli", str(created.key.id))
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(f"Bearer {created.secret}")
    assert authenticate(f"Bearer {acme.key}").tenant_id == str(acme.tenant.id)


def test_key_revoke_unknown_tenant(acme: TenantCtx) -> None:
    with pytest.raises(CommandError, match=re.escape("No tenant 'nope'.")):
        run("nope", str(key_of(acme).id))


def test_key_revoke_another_tenants_key_fails_and_changes_nothing(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """Naming Globex's key under Acme is "No such API key.", and Globex's key stays valid."""
    target = key_of(globex)

    for ident in (str(target.id), target.prefix):
        with pytest.raises(CommandError, match=re.escape("No such API key.")):
            run("acme", ident)

    target.refresh_from_db()
    assert target.revoked_at is None
    assert not AuditEvent.all_tenants.filter(action="key.revoke").exists()


def test_key_revoke_twice_keeps_the_first_time(acme: TenantCtx) -> None:
    created = make_key(tenant=acme.tenant)
    first = run("acme", created.key.prefix)

    second = run("acme", created.key.prefix)

    assert second == first
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="key.revoke").count() == 1
