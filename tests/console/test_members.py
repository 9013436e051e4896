"""The members page: the list, invitations by email, role changes, removal, leaving, and
accepting an invitation from its link or from the no-tenant page."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core import mail
from django.test import Client
from django.utils import timezone

from tenants.models import AuditEvent, Invitation, Membership, Role
from tests.factories import PASSWORD, TenantCtx, make_member, make_user, signed_in

LINK = re.compile(r"http://testserver/invitations/([A-Za-z0-9_-]+)/")


def _roles(ctx: TenantCtx) -> dict[str, str]:
    return dict(Membership.objects.for_tenant(ctx.tenant).values_list("user__email", "role"))


def _id(ctx: TenantCtx, email: str) -> int:
    return Membership.objects.for_tenant(ctx.tenant).get(user__email=email).pk


def _invite(client: Client, email: str, role: str) -> str:
    """Invite and return the token of the link in the email."""
    response = client.post("/members/invite/", {"email": email, "role": role})
    assert response.status_code == 302
    assert response["Location"] == "/members/"
    match = LINK.search(mail.outbox[-1].body)
    assert match is not None
    return match.group(1)


def test_every_member_sees_the_list_only_managers_see_the_forms(acme: TenantCtx) -> None:
    viewer = make_member(tenant=acme.tenant, email="viewer@acme.test", role=Role.VIEWER)
    page = signed_in(viewer).get("/members/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "owner@acme.test" in body
    assert "viewer@acme.test" in body
    assert "/members/invite/" not in body
    assert "/remove/" not in body
    owner_page = signed_in(acme.owner).get("/members/").content.decode()
    assert 'action="/members/invite/"' in owner_page
    assert f'action="/members/{_id(acme, "viewer@acme.test")}/remove/"' in owner_page


def test_invite_by_email_then_sign_up_from_the_link(acme: TenantCtx) -> None:
    """The email goes to the invited address only, with a one-time link; a new person sets
    a password there, joins with the role and is signed in to the tenant."""
    owner = signed_in(acme.owner)
    token = _invite(owner, "New@Example.Test", "developer")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.test"]
    assert mail.outbox[0].subject == "You are invited to Acme on OpenPlatform"
    assert f"http://testserver/invitations/{token}/" in mail.outbox[0].body
    guest = Client()
    page = guest.get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert f'action="/invitations/{token}/signup/"' in page.content.decode()
    joined = guest.post(f"/invitations/{token}/signup/", {"password": PASSWORD})
    assert joined.status_code == 302
    assert joined["Location"] == "/"
    assert guest.session["tenant_id"] == str(acme.tenant.id)
    assert _roles(acme)["new@example.test"] == "developer"
    assert guest.get("/").status_code == 200
    again = Client().post(f"/invitations/{token}/signup/", {"password": PASSWORD})
    assert again.status_code == 302
    assert list(
        AuditEvent.objects.for_tenant(acme.tenant)
        .filter(action__startswith="member.")
        .values_list("action", flat=True)
        .order_by("id")
    ) == ["member.invite", "member.accept"]


def test_a_signed_in_person_accepts_their_invitation(acme: TenantCtx) -> None:
    token = _invite(signed_in(acme.owner), "dev@example.test", "viewer")
    dev = signed_in(make_user(email="dev@example.test"))
    assert dev.get("/").status_code == 403  # no tenant yet: the no-tenant page
    response = dev.post(f"/invitations/{token}/")
    assert response.status_code == 302
    assert _roles(acme)["dev@example.test"] == "viewer"
    assert dev.get("/").status_code == 200


def test_someone_else_cannot_accept_an_invitation(acme: TenantCtx) -> None:
    token = _invite(signed_in(acme.owner), "dev@example.test", "admin")
    stranger = signed_in(make_user(email="stranger@example.test"))
    assert stranger.post(f"/invitations/{token}/").status_code == 403
    assert "stranger@example.test" not in _roles(acme)
    assert Invitation.objects.for_tenant(acme.tenant).get().accepted_at is None


def test_an_expired_invitation_link_joins_nobody(acme: TenantCtx) -> None:
    token = _invite(signed_in(acme.owner), "dev@example.test", "viewer")
    Invitation.objects.for_tenant(acme.tenant).update(expires_at=timezone.now() - timedelta(1))
    dev = signed_in(make_user(email="dev@example.test"))
    assert "has expired" in dev.get(f"/invitations/{token}/").content.decode()
    response = dev.post(f"/invitations/{token}/", follow=True)
    assert "This invitation has expired" in response.content.decode()
    assert "dev@example.test" not in _roles(acme)


def test_an_unknown_invitation_link_is_a_404(db: Any) -> None:
    assert Client().get("/invitations/nonsense/").status_code == 404


def test_the_no_tenant_page_lists_invitations_and_creates_a_tenant(acme: TenantCtx) -> None:
    _invite(signed_in(acme.owner), "dev@example.test", "developer")
    dev = signed_in(make_user(email="dev@example.test"))
    page = dev.get("/")
    assert page.status_code == 403
    body = page.content.decode()
    assert 'href="/invitations/"' in body
    assert 'action="/tenants/new/"' in body
    listing = dev.get("/invitations/").content.decode()
    invitation = Invitation.objects.for_tenant(acme.tenant).get()
    assert f'action="/invitations/{invitation.id}/accept/"' in listing
    assert dev.post(f"/invitations/{invitation.id}/accept/").status_code == 302
    assert _roles(acme)["dev@example.test"] == "developer"
    created = dev.post("/tenants/new/", {"name": "Devshop"})
    assert created.status_code == 302
    assert Membership.all_tenants.get(tenant__slug="devshop").role == "owner"


def test_an_admin_cannot_make_an_owner_or_touch_one(acme: TenantCtx) -> None:
    admin = signed_in(make_member(tenant=acme.tenant, email="admin@acme.test", role=Role.ADMIN))
    make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER)
    before = _roles(acme)
    dev_id = _id(acme, "dev@acme.test")
    assert admin.post(f"/members/{dev_id}/role/", {"role": "owner"}).status_code == 403
    assert admin.post(f"/members/{dev_id}/role/", {"role": "admin"}).status_code == 403
    owner_id = _id(acme, "owner@acme.test")
    assert admin.post(f"/members/{owner_id}/remove/").status_code == 403
    assert admin.post("/members/invite/", {"email": "x@y.test", "role": "owner"}).status_code == 302
    assert _roles(acme) == before
    assert not Invitation.objects.for_tenant(acme.tenant).exists()
    assert mail.outbox == []
    assert admin.post(f"/members/{dev_id}/role/", {"role": "viewer"}).status_code == 302
    assert _roles(acme)["dev@acme.test"] == "viewer"


def test_viewers_and_developers_change_nothing(acme: TenantCtx) -> None:
    make_member(tenant=acme.tenant, email="viewer@acme.test", role=Role.VIEWER)
    dev = signed_in(make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER))
    viewer = signed_in(
        Membership.objects.for_tenant(acme.tenant).get(user__email="viewer@acme.test").user
    )
    before = _roles(acme)
    target = _id(acme, "viewer@acme.test")
    for client in (viewer, dev):
        assert (
            client.post("/members/invite/", {"email": "x@y.test", "role": "viewer"}).status_code
            == 403
        )
        assert client.post(f"/members/{target}/role/", {"role": "developer"}).status_code == 403
        assert client.post(f"/members/{target}/remove/").status_code == 403
    assert _roles(acme) == before
    assert mail.outbox == []


def test_the_last_owner_cannot_be_removed_demoted_or_leave(acme: TenantCtx) -> None:
    owner = signed_in(acme.owner)
    own = _id(acme, "owner@acme.test")
    for response in (
        owner.post(f"/members/{own}/role/", {"role": "admin"}, follow=True),
        owner.post(f"/members/{own}/remove/", follow=True),
        owner.post("/members/leave/", follow=True),
    ):
        assert "A tenant needs an owner" in response.content.decode()
    assert _roles(acme) == {"owner@acme.test": "owner"}


def test_another_tenants_member_is_a_404(acme: TenantCtx, globex: TenantCtx) -> None:
    theirs = _id(globex, "owner@globex.test")
    owner = signed_in(acme.owner)
    assert owner.post(f"/members/{theirs}/role/", {"role": "viewer"}).status_code == 404
    assert owner.post(f"/members/{theirs}/remove/").status_code == 404
    assert _roles(globex) == {"owner@globex.test": "owner"}


def test_a_viewer_leaves_the_tenant(acme: TenantCtx) -> None:
    viewer = signed_in(make_member(tenant=acme.tenant, email="viewer@acme.test", role=Role.VIEWER))
    assert viewer.post("/members/leave/").status_code == 302
    assert _roles(acme) == {"owner@acme.test": "owner"}
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="member.leave").count() == 1
