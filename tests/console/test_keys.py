"""API keys in the console: created with the secret shown once, revoked after a confirmation,
and never another tenant's."""

from __future__ import annotations

import re

from django.test import Client

from kernel.errors import Unauthenticated
from tenants.models import ApiKey, AuditEvent, Role
from tenants.principals import authenticate
from tests.factories import TenantCtx, make_key, make_member, signed_in

TOKEN = re.compile(r"op_[a-z0-9]{10}_[A-Za-z0-9]{40}")


def events(ctx: TenantCtx) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .exclude(actor__in=["operator", "test"])
        .order_by("id")
        .values_list("actor", "action")
    )


def test_create_key_shows_the_secret_once(acme: TenantCtx, owner: Client) -> None:
    """The answer to the POST carries the only copy of the token, with a copy-it-now notice;
    the token works, is not stored, and the dashboard never shows it again."""
    form = owner.get("/keys/new/")
    assert form.status_code == 200
    assert form.context["form"]["scopes"].initial == ["publish", "consume"]

    created = owner.post(
        "/keys/new/",
        {"name": "ci", "scopes": ["publish", "manage"], "resources": "queue:orders, topic:ev.*"},
    )
    assert created.status_code == 303  # POST, redirect, show once: a reload creates nothing
    response = owner.get(created["Location"])
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.content.decode()
    (secret,) = set(TOKEN.findall(body))
    assert "Copy it now: this is the only time the key is shown." in body

    key = ApiKey.objects.for_tenant(acme.tenant).get(name="ci")
    assert secret.startswith(f"op_{key.prefix}_")
    assert (key.scopes, key.resources, key.created_by) == (
        ["publish", "manage"],
        ["queue:orders", "topic:ev.*"],
        "user:owner@acme.test",
    )
    assert secret.split("_", 2)[2] not in key.secret_hash
    principal = authenticate(f"Bearer {secret}")
    assert principal.tenant_id == str(acme.tenant.id)
    assert events(acme) == [("user:owner@acme.test", "key.create")]

    dashboard = owner.get("/").content.decode()
    assert f"op_{key.prefix}_…" in dashboard
    assert secret not in dashboard
    assert secret.split("_", 2)[2] not in dashboard
    assert secret not in str(dict(owner.session))


def test_key_needs_a_scope(acme: TenantCtx, owner: Client) -> None:
    """No scope ticked is a field error, and no key is made."""
    response = owner.post("/keys/new/", {"name": "ci", "resources": ""})
    assert response.status_code == 200
    assert response.context["form"].errors == {"scopes": ["This field is required."]}
    assert list(ApiKey.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == ["all"]


def test_bad_resource_pattern_is_shown(acme: TenantCtx, owner: Client) -> None:
    """The service's resource check lands beside the resources field; nothing is stored."""
    response = owner.post("/keys/new/", {"name": "ci", "scopes": ["consume"], "resources": "db:x"})
    assert response.status_code == 200
    (error,) = response.context["form"].errors["resources"]
    assert error.startswith("Invalid resource patterns ['db:x']")
    assert list(ApiKey.objects.for_tenant(acme.tenant).values_list("name", flat=True)) == ["all"]
    assert events(acme) == []


def test_revoke_asks_then_revokes(acme: TenantCtx, owner: Client) -> None:
    """GET shows a confirmation naming the key; POST revokes it, audits it and the API
    refuses the key from then on."""
    created = make_key(tenant=acme.tenant, name="old", scopes=["consume"])
    url = f"/keys/{created.key.id}/revoke/"
    confirm = owner.get(url)
    assert confirm.status_code == 200
    assert "Programs using this key will stop working." in confirm.content.decode()
    assert ApiKey.objects.for_tenant(acme.tenant).get(pk=created.key.pk).revoked_at is None

    response = owner.post(url)
    assert response.status_code == 302
    assert response["Location"] == "/#keys"
    assert ApiKey.objects.for_tenant(acme.tenant).get(pk=created.key.pk).revoked_at is not None
    assert events(acme) == [("user:owner@acme.test", "key.revoke")]
    try:
        authenticate(f"Bearer {created.secret}")
    except Unauthenticated:
        pass
    else:  # pragma: no cover
        raise AssertionError("a revoked key still authenticates")
    assert "API key \u201cold\u201d revoked." in owner.get("/").content.decode()


def test_revoking_another_tenants_key_is_a_404(
    acme: TenantCtx, globex: TenantCtx, owner: Client
) -> None:
    """Globex's key id in Acme's session is not found, on GET and on POST, and stays valid."""
    theirs = ApiKey.objects.for_tenant(globex.tenant).get()
    url = f"/keys/{theirs.id}/revoke/"
    assert owner.get(url).status_code == 404
    assert owner.post(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert authenticate(f"Bearer {globex.key}").tenant_id == str(globex.tenant.id)
    assert events(acme) == []
    assert events(globex) == []


def test_malformed_key_id_is_a_404(acme: TenantCtx, owner: Client) -> None:
    assert owner.get("/keys/not-a-uuid/revoke/").status_code == 404
    assert owner.post("/keys/not-a-uuid/revoke/").status_code == 404


def test_revoke_confirmation_names_the_keys_resources(acme: TenantCtx, owner: Client) -> None:
    """The confirmation shows what the key reaches, so the owner knows what stops working."""
    created = make_key(
        tenant=acme.tenant,
        name="orders",
        scopes=["publish"],
        resources=["queue:orders", "topic:ev.*"],
    )
    body = owner.get(f"/keys/{created.key.id}/revoke/").content.decode()
    assert "<code>queue:orders</code><code>topic:ev.*</code>" in body


def test_dashboard_marks_keys_beyond_the_role(acme: TenantCtx) -> None:
    """A developer sees every key, and for one beyond their role a note instead of Revoke."""
    developer = signed_in(
        make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER)
    )
    response = developer.get("/")
    [row] = response.context["keys"]
    assert (row.item.name, row.can_revoke) == ("all", False)
    assert "Beyond your role" in response.content.decode()
