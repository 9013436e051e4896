"""The key pages: the one-time secret survives no reload, expiry on creation, the patterns
explained, last use and expiry in the list, and viewers refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.test import Client
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent
from tests.factories import TenantCtx, make_key, make_tenant, signed_in

TOKEN = re.compile(r"op_[a-z0-9]{10}_[A-Za-z0-9]{40}")
ALREADY_SHOWN = "This key's secret was already shown."


def key_names(ctx: TenantCtx) -> list[str]:
    return sorted(ApiKey.objects.for_tenant(ctx.tenant).values_list("name", flat=True))


def console_events(ctx: TenantCtx) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .exclude(actor__in=["operator", "test"])
        .order_by("id")
        .values_list("actor", "action")
    )


def test_secret_is_shown_once_and_a_reload_creates_nothing(acme: TenantCtx, owner: Client) -> None:
    """The POST answers 303 to the key's page; its first GET shows the secret (no-store), the
    second says it was already shown; one key and one audit event exist."""
    response = owner.post("/keys/new/", {"name": "ci", "scopes": ["publish"], "resources": ""})
    key = ApiKey.objects.for_tenant(acme.tenant).get(name="ci")
    assert response.status_code == 303
    assert response["Location"] == f"/keys/{key.id}/created/"

    first = owner.get(response["Location"])
    assert first.status_code == 200
    assert "no-store" in first["Cache-Control"]
    (secret,) = set(TOKEN.findall(first.content.decode()))
    assert secret.startswith(f"op_{key.prefix}_")
    assert "Copy it now: this is the only time the key is shown." in first.content.decode()
    assert secret not in str(dict(owner.session))

    second = owner.get(response["Location"])
    assert second.status_code == 200
    body = second.content.decode()
    assert TOKEN.findall(body) == []
    assert ALREADY_SHOWN in body
    assert f"op_{key.prefix}_…" in body

    assert key_names(acme) == ["all", "ci"]
    assert console_events(acme) == [("user:owner@acme.test", "key.create")]


def test_expiry_date_is_stored_as_midnight_utc(acme: TenantCtx, owner: Client) -> None:
    """An expiry date makes the key expire at 00:00 UTC that day; the page says when."""
    response = owner.post(
        "/keys/new/", {"name": "ci", "scopes": ["consume"], "expires_on": "2031-05-02"}
    )
    assert response.status_code == 303
    key = ApiKey.objects.for_tenant(acme.tenant).get(name="ci")
    assert key.expires_at == datetime(2031, 5, 2, tzinfo=UTC)
    assert "2031-05-02 00:00 UTC" in owner.get(response["Location"]).content.decode()


def test_expiry_in_days_counts_from_now(acme: TenantCtx, owner: Client) -> None:
    """ "In 30 days" stores now + 30 days."""
    before = timezone.now()
    response = owner.post(
        "/keys/new/", {"name": "ci", "scopes": ["consume"], "expires_in_days": 30}
    )
    after = timezone.now()
    assert response.status_code == 303
    expires_at = ApiKey.objects.for_tenant(acme.tenant).get(name="ci").expires_at
    assert expires_at is not None
    assert before + timedelta(days=30) <= expires_at <= after + timedelta(days=30)


def test_no_expiry_means_never(acme: TenantCtx, owner: Client) -> None:
    owner.post("/keys/new/", {"name": "ci", "scopes": ["consume"]})
    assert ApiKey.objects.for_tenant(acme.tenant).get(name="ci").expires_at is None


def test_both_expiry_fields_are_refused(acme: TenantCtx, owner: Client) -> None:
    """A date and a number of days together is a form error; no key is made."""
    response = owner.post(
        "/keys/new/",
        {"name": "ci", "scopes": ["consume"], "expires_on": "2031-05-02", "expires_in_days": 3},
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "__all__": ["Give an expiry date or a number of days, not both."]
    }
    assert key_names(acme) == ["all"]
    assert console_events(acme) == []


def test_past_expiry_is_refused_by_the_service(acme: TenantCtx, owner: Client) -> None:
    """A date already past comes back from key_create as an error on the form."""
    response = owner.post(
        "/keys/new/", {"name": "ci", "scopes": ["consume"], "expires_on": "2020-01-01"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {"__all__": ["expires_at must be in the future."]}
    assert key_names(acme) == ["all"]
    assert console_events(acme) == []


def test_days_out_of_range_are_refused(acme: TenantCtx, owner: Client) -> None:
    response = owner.post("/keys/new/", {"name": "ci", "scopes": ["consume"], "expires_in_days": 0})
    assert response.context["form"].errors == {
        "expires_in_days": ["Ensure this value is greater than or equal to 1."]
    }
    assert key_names(acme) == ["all"]


def test_form_explains_scopes_and_patterns(owner: Client) -> None:
    body = owner.get("/keys/new/").content.decode()
    for text in (
        "publish: send messages to queues and topics.",
        "consume: pull, acknowledge and nack messages of queues and subscriptions.",
        "topic:events.* every topic whose name starts with events.",
        "The key stops working at 00:00 UTC on this day.",
    ):
        assert text in body


def test_viewer_cannot_create_keys(acme: TenantCtx, viewer: Client) -> None:
    """A viewer gets a 403 on the form and on the POST, and nothing is created."""
    assert viewer.get("/keys/new/").status_code == 403
    response = viewer.post("/keys/new/", {"name": "ci", "scopes": ["consume"]})
    assert response.status_code == 403
    assert key_names(acme) == ["all"]
    assert console_events(acme) == []
    assert "new_key_secret" not in viewer.session


def test_another_tenants_key_page_is_a_404_and_keeps_the_secret(
    acme: TenantCtx, owner: Client
) -> None:
    """Asking for another tenant's key page is a 404 and does not use up this key's secret."""
    globex = make_tenant(name="Globex")
    foreign = make_key(tenant=globex.tenant, name="theirs")
    created = owner.post("/keys/new/", {"name": "ci", "scopes": ["consume"]})
    assert owner.get(f"/keys/{foreign.key.id}/created/").status_code == 404
    assert owner.get("/keys/not-a-uuid/created/").status_code == 404
    assert TOKEN.findall(owner.get(created["Location"]).content.decode()) != []


def test_secret_of_another_key_is_not_shown(acme: TenantCtx, owner: Client) -> None:
    """The session's secret belongs to one key: another key's page does not show it."""
    other = make_key(tenant=acme.tenant, name="older")
    created = owner.post("/keys/new/", {"name": "ci", "scopes": ["consume"]})
    page = owner.get(f"/keys/{other.key.id}/created/").content.decode()
    assert TOKEN.findall(page) == []
    assert ALREADY_SHOWN in page
    assert TOKEN.findall(owner.get(created["Location"]).content.decode()) != []


def test_list_shows_last_use_and_expiry(acme: TenantCtx, owner: Client) -> None:
    """The dashboard's key rows say when a key was last used and until when it is valid."""
    key = make_key(tenant=acme.tenant, name="ci", expires_at=datetime(2031, 5, 2, tzinfo=UTC))
    ApiKey.objects.for_tenant(acme.tenant).filter(pk=key.key.pk).update(
        last_used_at=timezone.now() - timedelta(hours=3)
    )
    body = owner.get("/").content.decode()
    assert "3\xa0hours ago" in body
    assert "until 2031-05-02 00:00 UTC" in body
    assert "never" in body  # the "all" key was never used


def test_signed_out_visitor_is_sent_to_login(acme: TenantCtx) -> None:
    key = make_key(tenant=acme.tenant, name="ci")
    response = Client().get(f"/keys/{key.key.id}/created/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert signed_in(acme.owner).get(f"/keys/{key.key.id}/created/").status_code == 200
