"""Roles: viewers read everything and change nothing; the other roles may write. Every
refused write is a 403 that stored nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from kernel.redis_client import get_redis
from queues.models import Queue, Subscription, Topic
from tenants.models import ApiKey, AuditEvent, Role
from tenants.principals import authenticate
from tests.factories import TenantCtx, make_key, make_member, make_queue, make_topic, signed_in


def snapshot(ctx: TenantCtx) -> dict[str, Any]:
    """Everything a console write could change in this tenant."""
    tenant = ctx.tenant
    return {
        "queues": sorted(Queue.objects.for_tenant(tenant).values_list("name", flat=True)),
        "topics": sorted(Topic.objects.for_tenant(tenant).values_list("name", flat=True)),
        "subs": sorted(Subscription.objects.for_tenant(tenant).values_list("name", flat=True)),
        "keys": sorted(ApiKey.objects.for_tenant(tenant).values_list("name", "revoked_at")),
        "events": AuditEvent.objects.for_tenant(tenant).count(),
    }


@pytest.fixture
def furnished(acme: TenantCtx) -> str:
    """Acme with a queue, a topic and a second key; returns that key's id."""
    make_queue(tenant=acme.tenant, name="orders")
    make_topic(tenant=acme.tenant, name="events")
    created = make_key(tenant=acme.tenant, name="ci", scopes=["publish"])
    return str(created.key.id)


def test_viewer_sees_everything_without_write_buttons(
    acme: TenantCtx, furnished: str, viewer: Client
) -> None:
    """The dashboard lists the tenant's data; create and revoke controls are not offered."""
    response = viewer.get("/")
    assert response.status_code == 200
    assert response.context["can_write"] is False
    body = response.content.decode()
    assert "orders" in body
    assert "events" in body
    assert "Read-only" in body
    for path in ("/new/queue/", "/new/topic/", "/new/subscription/", "/keys/new/"):
        assert f'href="{path}"' not in body
    assert f"/keys/{furnished}/revoke/" not in body


def test_owner_sees_write_buttons(acme: TenantCtx, furnished: str, owner: Client) -> None:
    body = owner.get("/").content.decode()
    for path in ("/new/queue/", "/new/topic/", "/new/subscription/", "/keys/new/"):
        assert f'href="{path}"' in body
    assert f"/keys/{furnished}/revoke/" in body


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (
            "/new/queue/",
            {
                "name": "sneaky",
                "visibility_timeout": 30,
                "delay_seconds": 0,
                "retention_seconds": 3600,
            },
        ),
        ("/new/topic/", {"name": "sneaky", "partitions": 1, "retention_seconds": 3600}),
        (
            "/new/subscription/",
            {"name": "sneaky", "topic": "events", "start_at": "latest", "visibility_timeout": 30},
        ),
        ("/keys/new/", {"name": "sneaky", "scopes": ["manage"]}),
        ("/keys/{key}/revoke/", {}),
    ],
)
def test_viewer_writes_are_403_and_change_nothing(
    acme: TenantCtx, furnished: str, viewer: Client, path: str, data: dict[str, Any]
) -> None:
    """A viewer's POST (and the form's GET) is refused and nothing is created or revoked."""
    url = path.format(key=furnished)
    before = snapshot(acme)
    assert viewer.get(url).status_code == 403
    response = viewer.post(url, data)
    assert response.status_code == 403
    assert "Your role in this tenant cannot make changes." in response.content.decode()
    assert snapshot(acme) == before


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER])
def test_admins_and_developers_can_write(acme: TenantCtx, role: Role) -> None:
    client = signed_in(make_member(tenant=acme.tenant, email=f"{role}@acme.test", role=role))
    response = client.post(
        "/new/topic/", {"name": "by-" + role, "partitions": 1, "retention_seconds": 3600}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="topic.create")
    assert (event.actor, event.target_id) == (f"user:{role}@acme.test", f"by-{role}")


def test_suspended_tenant_is_read_only(acme: TenantCtx, owner: Client) -> None:
    """Even the owner of a suspended tenant cannot change it from the console."""
    acme.tenant.is_active = False
    acme.tenant.save(update_fields=["is_active"])
    assert owner.get("/").context["can_write"] is False
    response = owner.post("/new/topic/", {"name": "x", "partitions": 1, "retention_seconds": 60})
    assert response.status_code == 403
    assert not Topic.objects.for_tenant(acme.tenant).exists()


def test_writes_need_the_csrf_token(acme: TenantCtx) -> None:
    """A cross-site form post (no CSRF token) is refused and stores nothing."""
    owner = make_member(tenant=acme.tenant, email="csrf@acme.test", role=Role.OWNER)
    client = signed_in(owner, enforce_csrf_checks=True)
    response = client.post("/new/topic/", {"name": "x", "partitions": 1, "retention_seconds": 60})
    assert response.status_code == 403
    assert not Topic.objects.for_tenant(acme.tenant).exists()


# --- keys are bounded by the role -------------------------------------------------------------


@pytest.fixture
def developer(acme: TenantCtx) -> Client:
    """A developer of Acme, signed in."""
    return signed_in(
        make_member(tenant=acme.tenant, email="developer@acme.test", role=Role.DEVELOPER)
    )


def test_developer_cannot_revoke_the_all_scopes_key(
    acme: TenantCtx, furnished: str, developer: Client, django_capture_on_commit_callbacks
) -> None:
    """A developer's role grants publish and consume only, so the tenant's all-scopes key is
    beyond it: the dashboard offers no Revoke for it, the confirmation and the POST are 403,
    and the key stays unrevoked, unaudited, uncached-as-revoked and working."""
    target = ApiKey.objects.for_tenant(acme.tenant).get(name="all")
    assert authenticate(f"Bearer {acme.key}").key_id == str(target.id)  # fills the hot cache
    cached = get_redis().get(f"op:cache:apikey:{target.prefix}")
    url = f"/keys/{target.id}/revoke/"
    before = snapshot(acme)

    dashboard = developer.get("/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        confirm = developer.get(url)
        response = developer.post(url)

    assert url not in dashboard
    assert f"/keys/{furnished}/revoke/" in dashboard  # the publish key is within the role
    assert confirm.status_code == 403
    assert response.status_code == 403
    assert "Your role (developer) cannot revoke this key" in response.content.decode()
    assert snapshot(acme) == before
    assert get_redis().get(f"op:cache:apikey:{target.prefix}") == cached
    assert authenticate(f"Bearer {acme.key}").key_id == str(target.id)


def test_developer_revokes_a_key_within_the_role(
    acme: TenantCtx, furnished: str, developer: Client
) -> None:
    response = developer.post(f"/keys/{furnished}/revoke/")
    assert response.status_code == 302
    assert ApiKey.objects.for_tenant(acme.tenant).get(pk=furnished).revoked_at is not None


def test_developer_cannot_create_a_manage_key(acme: TenantCtx, developer: Client) -> None:
    """The form offers the developer publish and consume only; a POST asking for manage is a
    form error and stores nothing."""
    form = developer.get("/keys/new/").context["form"]
    assert [value for value, _ in form.fields["scopes"].choices] == ["publish", "consume"]
    before = snapshot(acme)

    response = developer.post("/keys/new/", {"name": "escalate", "scopes": ["publish", "manage"]})

    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["scopes"]
    assert snapshot(acme) == before
    created = developer.post("/keys/new/", {"name": "worker", "scopes": ["publish", "consume"]})
    assert created.status_code == 303
    assert ApiKey.objects.for_tenant(acme.tenant).get(name="worker").scopes == [
        "publish",
        "consume",
    ]


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owners_and_admins_may_revoke_the_all_scopes_key(acme: TenantCtx, role: Role) -> None:
    """Owners and admins hold every scope tenant-wide: every key is within their role."""
    client = signed_in(make_member(tenant=acme.tenant, email=f"{role}-2@acme.test", role=role))
    target = ApiKey.objects.for_tenant(acme.tenant).get(name="all")
    assert client.get("/keys/new/").context["form"].fields["scopes"].choices == [
        ("publish", "Publish"),
        ("consume", "Consume"),
        ("manage", "Manage"),
    ]

    response = client.post(f"/keys/{target.id}/revoke/")

    assert response.status_code == 302
    target.refresh_from_db()
    assert target.revoked_at is not None
