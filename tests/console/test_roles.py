"""Roles: viewers read everything and change nothing; the other roles may write. Every
refused write is a 403 that stored nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from queues import services as queue_services
from queues.models import Queue, Subscription, Topic
from tenants import services
from tenants.models import ApiKey, AuditEvent, Role
from tests.conftest import TenantCtx
from tests.console.conftest import member, signed_in


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
    queue_services.queue_create(tenant=acme.tenant, actor="test", name="orders")
    queue_services.topic_create(tenant=acme.tenant, actor="test", name="events")
    created = services.key_create(tenant=acme.tenant, name="ci", scopes=["publish"], actor="test")
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
    for path in ("/queues/new/", "/topics/new/", "/subscriptions/new/", "/keys/new/"):
        assert f'href="{path}"' not in body
    assert f"/keys/{furnished}/revoke/" not in body


def test_owner_sees_write_buttons(acme: TenantCtx, furnished: str, owner: Client) -> None:
    body = owner.get("/").content.decode()
    for path in ("/queues/new/", "/topics/new/", "/subscriptions/new/", "/keys/new/"):
        assert f'href="{path}"' in body
    assert f"/keys/{furnished}/revoke/" in body


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (
            "/queues/new/",
            {
                "name": "sneaky",
                "visibility_timeout": 30,
                "delay_seconds": 0,
                "retention_seconds": 3600,
            },
        ),
        ("/topics/new/", {"name": "sneaky", "partitions": 1, "retention_seconds": 3600}),
        (
            "/subscriptions/new/",
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
    client = signed_in(member(acme.tenant, f"{role}@acme.test", role))
    response = client.post(
        "/topics/new/", {"name": "by-" + role, "partitions": 1, "retention_seconds": 3600}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="topic.create")
    assert (event.actor, event.target_id) == (f"user:{role}@acme.test", f"by-{role}")


def test_suspended_tenant_is_read_only(acme: TenantCtx, owner: Client) -> None:
    """Even the owner of a suspended tenant cannot change it from the console."""
    acme.tenant.is_active = False
    acme.tenant.save(update_fields=["is_active"])
    assert owner.get("/").context["can_write"] is False
    response = owner.post("/topics/new/", {"name": "x", "partitions": 1, "retention_seconds": 60})
    assert response.status_code == 403
    assert not Topic.objects.for_tenant(acme.tenant).exists()


def test_writes_need_the_csrf_token(acme: TenantCtx) -> None:
    """A cross-site form post (no CSRF token) is refused and stores nothing."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(member(acme.tenant, "csrf@acme.test", Role.OWNER))
    response = client.post("/topics/new/", {"name": "x", "partitions": 1, "retention_seconds": 60})
    assert response.status_code == 403
    assert not Topic.objects.for_tenant(acme.tenant).exists()
