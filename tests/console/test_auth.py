"""Signing in and out, the login gate on every page, and the tenant switcher."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from queues.models import Queue
from tenants.models import Role
from tests.factories import (
    PASSWORD,
    TenantCtx,
    make_member,
    make_membership,
    make_queue,
    make_tenant,
    make_user,
    signed_in,
)

CONSOLE_PAGES = [
    "/",
    "/new/queue/",
    "/new/topic/",
    "/new/subscription/",
    "/keys/new/",
    "/keys/00000000-0000-0000-0000-000000000000/revoke/",
]


@pytest.fixture
def initech(db: Any) -> TenantCtx:
    return make_tenant(name="Initech", owner_email="peter@initech.test", owner_password=PASSWORD)


def test_login_page_asks_for_email_and_password(db: Any) -> None:
    """The sign-in page is public and has an email field, a password field and a CSRF token."""
    response = Client().get("/login/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'type="email" name="username"' in body
    assert 'type="password" name="password"' in body
    assert "csrfmiddlewaretoken" in body


def test_login_lands_on_the_dashboard_of_the_first_tenant(initech: TenantCtx) -> None:
    """Email + password signs in, redirects to / and picks the user's first membership."""
    client = Client()
    response = client.post("/login/", {"username": "peter@initech.test", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["tenant_id"] == str(initech.tenant.id)
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert dashboard.context["tenant"] == initech.tenant
    assert "<h1>Initech</h1>" in dashboard.content.decode()


def test_login_ignores_the_case_of_the_email(initech: TenantCtx) -> None:
    """Addresses are stored in lower case; typing capitals still signs in."""
    client = Client()
    response = client.post("/login/", {"username": "Peter@Initech.TEST", "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(initech.owner.pk)


def test_login_follows_next(initech: TenantCtx) -> None:
    """A page that sent the person to sign in is where they land afterwards."""
    response = Client().post(
        "/login/?next=/keys/new/",
        {"username": "peter@initech.test", "password": PASSWORD, "next": "/keys/new/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/keys/new/"


def test_wrong_password_is_refused(initech: TenantCtx) -> None:
    """A wrong password re-shows the form with an error and signs nobody in."""
    client = Client()
    response = client.post("/login/", {"username": "peter@initech.test", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct email" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert "tenant_id" not in client.session


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_anonymous_visitors_are_sent_to_login(db: Any, path: str) -> None:
    """Every console page needs a login: GET redirects to /login/?next=<page>."""
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_anonymous_post_creates_nothing(acme: TenantCtx) -> None:
    """A write without a login is redirected to the sign-in page and stores nothing."""
    response = Client().post("/new/queue/", {"name": "orders"})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert not Queue.objects.for_tenant(acme.tenant).exists()


def test_logout_is_a_post_and_ends_the_session(initech: TenantCtx) -> None:
    """Sign out is a POST (a GET answers a page with the sign-out button and signs nobody
    out); afterwards the dashboard asks for a login again."""
    client = signed_in(initech.owner)
    offer = client.get("/logout/")
    assert offer.status_code == 200
    assert 'action="/logout/"' in offer.content.decode()
    assert client.get("/").status_code == 200
    response = client.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert client.get("/")["Location"] == "/login/?next=/"


def test_a_user_with_two_tenants_can_switch(acme: TenantCtx, globex: TenantCtx) -> None:
    """The switcher lists every membership; choosing one changes the session's tenant and
    so the data the dashboard shows."""
    user = make_member(tenant=acme.tenant, email="dana@example.test", role=Role.DEVELOPER)
    make_membership(tenant=globex.tenant, user=user, role=Role.VIEWER)
    make_queue(tenant=globex.tenant, name="globex-jobs")
    client = Client()
    client.post("/login/", {"username": "dana@example.test", "password": PASSWORD})
    assert client.session["tenant_id"] == str(acme.tenant.id)

    first = client.get("/")
    body = first.content.decode()
    assert 'class="switcher"' in body
    assert f'value="{globex.tenant.id}"' in body
    assert "globex-jobs" not in body

    response = client.post("/tenant/", {"tenant_id": str(globex.tenant.id)})
    assert response.status_code == 302
    assert client.session["tenant_id"] == str(globex.tenant.id)
    second = client.get("/")
    assert second.context["tenant"] == globex.tenant
    assert second.context["can_write"] is False
    assert "globex-jobs" in second.content.decode()


def test_switching_to_a_tenant_one_is_not_in_is_a_404(acme: TenantCtx, globex: TenantCtx) -> None:
    """The switcher only accepts the user's own tenants; the session stays as it was."""
    client = signed_in(make_member(tenant=acme.tenant, email="eve@acme.test", role=Role.ADMIN))
    client.get("/")
    response = client.post("/tenant/", {"tenant_id": str(globex.tenant.id)})
    assert response.status_code == 404
    assert client.session["tenant_id"] == str(acme.tenant.id)
    assert client.get("/").context["tenant"] == acme.tenant


def test_a_session_for_a_lost_membership_falls_back(acme: TenantCtx, globex: TenantCtx) -> None:
    """A session still naming a tenant the user has left shows their remaining tenant."""
    user = make_member(tenant=acme.tenant, email="sam@example.test", role=Role.DEVELOPER)
    gone = make_membership(tenant=globex.tenant, user=user, role=Role.DEVELOPER)
    client = signed_in(user)
    client.post("/tenant/", {"tenant_id": str(globex.tenant.id)})
    gone.delete()
    response = client.get("/")
    assert response.context["tenant"] == acme.tenant
    assert client.session["tenant_id"] == str(acme.tenant.id)


def test_a_user_without_tenants_gets_a_403_page(db: Any) -> None:
    """Signing in works, but with no membership the console has nothing to show."""
    user = make_user(email="loner@example.test", password=PASSWORD)
    response = signed_in(user).get("/")
    assert response.status_code == 403
    assert "not a member of any tenant" in response.content.decode()


def test_console_pages_are_not_cached(acme: TenantCtx, owner: Client) -> None:
    """Tenant data (and the one-time key secret) must not stay in a browser or proxy cache."""
    response = owner.get("/")
    assert "no-store" in response["Cache-Control"]
