"""Revoking an invitation from the members page: who may, what the link says afterwards, and
that neither way of accepting it (signing up through the link, or accepting as an existing
account) joins anybody; the service's audit event, and what a refused revocation leaves."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from kernel.errors import Conflict, Forbidden, NotFound
from tenants import services
from tenants.models import AuditEvent, Invitation, Membership, Role, User
from tests.factories import PASSWORD, TenantCtx, make_member, make_user, signed_in

LINK = re.compile(r"http://testserver/invitations/([A-Za-z0-9_-]+)/")
REVOKED_PAGE = "This invitation was revoked and is no longer valid"
REVOKED_ERROR = "This invitation was revoked and is no longer valid: ask for a new one."


def _invite(client: Client, email: str, role: str) -> tuple[Invitation, str]:
    """Invite through the members page; the invitation and the token of its emailed link."""
    response = client.post("/members/invite/", {"email": email, "role": role})
    assert response.status_code == 302
    match = LINK.search(str(mail.outbox[-1].body))
    assert match is not None
    invitation = Invitation.all_tenants.get(email=email, revoked_at__isnull=True)
    return invitation, match.group(1)


def _revoke_url(invitation: Invitation) -> str:
    return f"/members/invitations/{invitation.id}/revoke/"


def _events(ctx: TenantCtx) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """The tenant's member.* audit trail, oldest first."""
    return [
        (e.action, e.actor, e.target_type, e.target_id, e.data)
        for e in AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(action__startswith="member.")
        .order_by("id")
    ]


def _members(ctx: TenantCtx) -> dict[str, str]:
    return dict(Membership.objects.for_tenant(ctx.tenant).values_list("user__email", "role"))


def test_an_owner_sees_pending_invitations_and_revokes_one(acme: TenantCtx) -> None:
    """The members page lists the pending invitation with a Revoke button; revoking marks it
    revoked, writes one member.invite_revoke event, and the list no longer shows it."""
    owner = signed_in(acme.owner)
    invitation, _token = _invite(owner, "dev@example.test", "developer")
    page = owner.get("/members/").content.decode()
    assert "Pending invitations" in page
    assert f'action="{_revoke_url(invitation)}"' in page

    response = owner.post(_revoke_url(invitation), follow=True)

    assert response.redirect_chain == [("/members/", 302)]
    body = response.content.decode()
    assert "Invitation revoked: its link no longer works." in body
    assert "Pending invitations" not in body
    assert "dev@example.test" not in body
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert invitation.accepted_at is None
    assert _events(acme) == [
        (
            "member.invite",
            "user:owner@acme.test",
            "invitation",
            str(invitation.id),
            {"email": "dev@example.test", "role": "developer"},
        ),
        (
            "member.invite_revoke",
            "user:owner@acme.test",
            "invitation",
            str(invitation.id),
            {"email": "dev@example.test", "role": "developer"},
        ),
    ]


def test_a_revoked_link_says_so_and_signing_up_through_it_makes_no_account(
    acme: TenantCtx,
) -> None:
    """The link of a revoked invitation explains it is no longer valid and offers no form;
    posting the sign-up form anyway creates no account and joins nobody."""
    owner = signed_in(acme.owner)
    invitation, token = _invite(owner, "new@example.test", "developer")
    owner.post(_revoke_url(invitation))

    guest = Client()
    page = guest.get(f"/invitations/{token}/")
    assert page.status_code == 200
    body = page.content.decode()
    assert REVOKED_PAGE in body
    assert f'action="/invitations/{token}/signup/"' not in body
    assert "Create account and join" not in body

    refused = guest.post(f"/invitations/{token}/signup/", {"password": PASSWORD}, follow=True)

    assert refused.redirect_chain == [(f"/invitations/{token}/", 302)]
    assert REVOKED_ERROR in refused.content.decode()
    assert not User.objects.filter(email="new@example.test").exists()
    assert "_auth_user_id" not in guest.session
    assert _members(acme) == {"owner@acme.test": "owner"}
    assert [e[0] for e in _events(acme)] == ["member.invite", "member.invite_revoke"]


def test_an_existing_account_cannot_accept_a_revoked_invitation(acme: TenantCtx) -> None:
    """Signed in as the invited address: the link shows no Accept button, accepting by the
    link or from the list of one's invitations is refused, and the list no longer has it."""
    owner = signed_in(acme.owner)
    invitation, token = _invite(owner, "dev@example.test", "viewer")
    dev = signed_in(make_user(email="dev@example.test"))
    assert (
        f'action="/invitations/{invitation.id}/accept/"'
        in dev.get("/invitations/").content.decode()
    )
    owner.post(_revoke_url(invitation))

    page = dev.get(f"/invitations/{token}/").content.decode()
    assert REVOKED_PAGE in page
    assert "Accept invitation" not in page
    by_link = dev.post(f"/invitations/{token}/", follow=True)
    assert by_link.redirect_chain == [(f"/invitations/{token}/", 302)]
    assert REVOKED_ERROR in by_link.content.decode()
    by_id = dev.post(f"/invitations/{invitation.id}/accept/", follow=True)
    assert by_id.redirect_chain == [("/invitations/", 302)]
    assert REVOKED_ERROR in by_id.content.decode()
    assert "No pending invitations." in by_id.content.decode()

    assert _members(acme) == {"owner@acme.test": "owner"}
    invitation.refresh_from_db()
    assert invitation.accepted_at is None
    assert [e[0] for e in _events(acme)] == ["member.invite", "member.invite_revoke"]


def test_a_new_invitation_after_a_revoked_one_works_and_the_old_link_stays_revoked(
    acme: TenantCtx,
) -> None:
    owner = signed_in(acme.owner)
    old, old_token = _invite(owner, "dev@example.test", "viewer")
    owner.post(_revoke_url(old))
    new, new_token = _invite(owner, "dev@example.test", "developer")

    assert new.id != old.id
    assert REVOKED_PAGE in Client().get(f"/invitations/{old_token}/").content.decode()
    dev = signed_in(make_user(email="dev@example.test"))
    assert dev.post(f"/invitations/{old_token}/").status_code == 302
    assert "dev@example.test" not in _members(acme)
    assert dev.post(f"/invitations/{new_token}/").status_code == 302
    assert _members(acme)["dev@example.test"] == "developer"


def test_an_admin_revokes_only_invitations_for_roles_they_may_invite(acme: TenantCtx) -> None:
    """An admin may invite (so revoke) developers and viewers, not admins or owners: the
    owner's admin invitation has no Revoke button for them and its revocation is a 403 that
    changes nothing."""
    admin = signed_in(make_member(tenant=acme.tenant, email="admin@acme.test", role=Role.ADMIN))
    by_owner, _ = _invite(signed_in(acme.owner), "boss@example.test", "admin")
    by_admin, _ = _invite(admin, "dev@example.test", "developer")
    page = admin.get("/members/").content.decode()
    assert f'action="{_revoke_url(by_admin)}"' in page
    assert f'action="{_revoke_url(by_owner)}"' not in page
    assert "boss@example.test" in page  # listed, only not theirs to revoke

    assert admin.post(_revoke_url(by_owner)).status_code == 403
    assert admin.post(_revoke_url(by_admin)).status_code == 302

    by_owner.refresh_from_db()
    by_admin.refresh_from_db()
    assert by_owner.revoked_at is None
    assert by_admin.revoked_at is not None
    assert [(e[0], e[1], e[3]) for e in _events(acme)] == [
        ("member.invite", "user:owner@acme.test", str(by_owner.id)),
        ("member.invite", "user:admin@acme.test", str(by_admin.id)),
        ("member.invite_revoke", "user:admin@acme.test", str(by_admin.id)),
    ]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_viewers_and_developers_get_a_403_and_nothing_changes(acme: TenantCtx, role: Role) -> None:
    """Members who may not invite see no Revoke button and cannot revoke: the invitation
    stays pending and its link still works; no event is written."""
    invitation, token = _invite(signed_in(acme.owner), "dev@example.test", "viewer")
    member = signed_in(make_member(tenant=acme.tenant, email="m@acme.test", role=role))
    assert "/revoke/" not in member.get("/members/").content.decode()

    assert member.post(_revoke_url(invitation)).status_code == 403

    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert [e[0] for e in _events(acme)] == ["member.invite"]
    assert (
        "Accept invitation"
        in signed_in(make_user(email="dev@example.test"))
        .get(f"/invitations/{token}/")
        .content.decode()
    )


def test_another_tenants_invitation_is_a_404_and_stays_pending(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """Globex's owner cannot revoke Acme's invitation (404, as for one that does not exist);
    nothing is written to either tenant's trail."""
    invitation, _ = _invite(signed_in(acme.owner), "dev@example.test", "viewer")
    stranger = signed_in(globex.owner)

    assert stranger.post(_revoke_url(invitation)).status_code == 404
    assert stranger.post(f"/members/invitations/{uuid.uuid4()}/revoke/").status_code == 404

    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert [e[0] for e in _events(acme)] == ["member.invite"]
    assert _events(globex) == []


def test_revocation_is_a_post(acme: TenantCtx) -> None:
    invitation, _ = _invite(signed_in(acme.owner), "dev@example.test", "viewer")
    assert signed_in(acme.owner).get(_revoke_url(invitation)).status_code == 405
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


# --- the service -------------------------------------------------------------------------------


def test_revoking_twice_is_harmless_and_audited_once(acme: TenantCtx) -> None:
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.VIEWER
    )
    first = services.invitation_revoke(
        tenant=acme.tenant, actor=acme.owner, invitation_id=created.invitation.id
    )
    again = services.invitation_revoke(
        tenant=acme.tenant, actor=acme.owner, invitation_id=str(created.invitation.id)
    )

    assert first.revoked_at is not None
    assert again.revoked_at == first.revoked_at
    assert [e[0] for e in _events(acme)] == ["member.invite", "member.invite_revoke"]


def test_a_used_or_expired_invitation_cannot_be_revoked(acme: TenantCtx) -> None:
    """Conflicts that change nothing: a used invitation already made its member, an expired
    one can no longer be accepted anyway."""
    used = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.VIEWER
    )
    services.invitation_accept(token=used.token, user=make_user(email="dev@example.test"))
    late = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="late@example.test", role=Role.VIEWER
    )
    Invitation.objects.for_tenant(acme.tenant).filter(pk=late.invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(Conflict) as used_refusal:
        services.invitation_revoke(
            tenant=acme.tenant, actor=acme.owner, invitation_id=used.invitation.id
        )
    assert used_refusal.value.detail == "This invitation has been used already."
    with pytest.raises(Conflict) as expired_refusal:
        services.invitation_revoke(
            tenant=acme.tenant, actor=acme.owner, invitation_id=late.invitation.id
        )
    assert expired_refusal.value.detail == "This invitation has expired already."

    assert list(
        Invitation.objects.for_tenant(acme.tenant).values_list("revoked_at", flat=True)
    ) == [None, None]
    assert [e[0] for e in _events(acme)] == ["member.invite", "member.accept", "member.invite"]
    assert _members(acme)["dev@example.test"] == "viewer"


def test_the_service_refuses_what_the_role_may_not_and_what_is_not_the_tenants(
    acme: TenantCtx, globex: TenantCtx
) -> None:
    """404 before 403: another tenant's or a malformed id is NotFound even for a member who
    may revoke nothing; a developer's own tenant's invitation is Forbidden."""
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.VIEWER
    )
    developer = make_member(tenant=acme.tenant, email="d@acme.test", role=Role.DEVELOPER)
    with pytest.raises(Forbidden) as forbidden:
        services.invitation_revoke(
            tenant=acme.tenant, actor=developer, invitation_id=created.invitation.id
        )
    assert forbidden.value.detail == "As developer you cannot manage viewers."
    with pytest.raises(NotFound) as elsewhere:
        services.invitation_revoke(
            tenant=globex.tenant, actor=globex.owner, invitation_id=created.invitation.id
        )
    assert elsewhere.value.detail == "No such invitation."
    with pytest.raises(NotFound) as malformed:
        services.invitation_revoke(tenant=acme.tenant, actor=developer, invitation_id="nonsense")
    assert malformed.value.detail == "No such invitation."
    assert Invitation.objects.for_tenant(acme.tenant).get().revoked_at is None
    assert [e[0] for e in _events(acme)] == ["member.invite"]
