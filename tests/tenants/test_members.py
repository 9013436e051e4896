"""Invitations and membership changes (tenants.services): who may do what, the last owner,
and the audit trail of each change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from kernel.errors import Conflict, Forbidden, NotFound
from tenants import services
from tenants.models import AuditEvent, Invitation, Membership, Role, User
from tests.factories import TenantCtx, make_member, make_user


def _roles(ctx: TenantCtx) -> dict[str, str]:
    return dict(Membership.objects.for_tenant(ctx.tenant).values_list("user__email", "role"))


def _actions(ctx: TenantCtx) -> list[str]:
    return list(
        AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(action__startswith="member.")
        .order_by("id")
        .values_list("action", flat=True)
    )


def test_invite_then_accept_makes_a_membership_with_the_role(acme: TenantCtx) -> None:
    """The invitation stores only the token's hash; accepting it joins with its role, marks
    it used and audits both steps."""
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email=" Dev@Example.Test ", role=Role.DEVELOPER
    )
    invitation = created.invitation
    assert invitation.email == "dev@example.test"
    assert invitation.token_hash != created.token
    assert len(invitation.token_hash) == 64
    user = make_user(email="dev@example.test")
    membership = services.invitation_accept(token=created.token, user=user)
    assert membership.role == Role.DEVELOPER
    assert membership.tenant_id == acme.tenant.id
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None
    assert _actions(acme) == ["member.invite", "member.accept"]
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="member.accept")
    assert event.actor == "user:dev@example.test"
    assert event.data == {"email": "dev@example.test", "role": "developer"}


def test_a_used_invitation_is_refused(acme: TenantCtx) -> None:
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.VIEWER
    )
    user = make_user(email="dev@example.test")
    services.invitation_accept(token=created.token, user=user)
    with pytest.raises(Conflict, match="used already"):
        services.invitation_accept(token=created.token, user=user)
    assert _actions(acme) == ["member.invite", "member.accept"]


def test_an_expired_invitation_is_refused_and_joins_nobody(acme: TenantCtx) -> None:
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="late@example.test", role=Role.VIEWER
    )
    Invitation.objects.for_tenant(acme.tenant).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    user = make_user(email="late@example.test")
    with pytest.raises(Conflict, match="expired"):
        services.invitation_accept(token=created.token, user=user)
    assert "late@example.test" not in _roles(acme)
    assert Invitation.objects.for_tenant(acme.tenant).get().accepted_at is None


def test_an_invitation_for_another_address_is_refused(acme: TenantCtx) -> None:
    created = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.ADMIN
    )
    other = make_user(email="other@example.test")
    with pytest.raises(Forbidden):
        services.invitation_accept(token=created.token, user=other)
    with pytest.raises(NotFound):
        services.invitation_accept(token="no-such-token", user=other)
    assert _roles(acme) == {"owner@acme.test": "owner"}


def test_an_admin_cannot_invite_an_owner_or_an_admin(acme: TenantCtx) -> None:
    admin = make_member(tenant=acme.tenant, email="admin@acme.test", role=Role.ADMIN)
    for role in (Role.OWNER, Role.ADMIN):
        with pytest.raises(Forbidden):
            services.invitation_create(
                tenant=acme.tenant, actor=admin, email="x@example.test", role=role
            )
    assert not Invitation.objects.for_tenant(acme.tenant).exists()
    services.invitation_create(
        tenant=acme.tenant, actor=admin, email="x@example.test", role=Role.VIEWER
    )
    assert Invitation.objects.for_tenant(acme.tenant).get().role == "viewer"


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_developers_and_viewers_cannot_invite(acme: TenantCtx, role: Role) -> None:
    member = make_member(tenant=acme.tenant, email="m@acme.test", role=role)
    with pytest.raises(Forbidden):
        services.invitation_create(
            tenant=acme.tenant, actor=member, email="x@example.test", role=Role.VIEWER
        )
    assert not Invitation.objects.for_tenant(acme.tenant).exists()


def test_inviting_again_replaces_the_pending_invitation(acme: TenantCtx) -> None:
    first = services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.VIEWER
    )
    services.invitation_create(
        tenant=acme.tenant, actor=acme.owner, email="dev@example.test", role=Role.ADMIN
    )
    assert list(Invitation.objects.for_tenant(acme.tenant).values_list("role", flat=True)) == [
        "admin"
    ]
    with pytest.raises(NotFound):
        services.invitation_accept(token=first.token, user=make_user(email="dev@example.test"))


def test_inviting_a_member_is_a_conflict(acme: TenantCtx) -> None:
    with pytest.raises(Conflict):
        services.invitation_create(
            tenant=acme.tenant, actor=acme.owner, email="owner@acme.test", role=Role.VIEWER
        )
    assert not Invitation.objects.for_tenant(acme.tenant).exists()


def test_the_last_owner_cannot_be_demoted_removed_or_leave(acme: TenantCtx) -> None:
    own = Membership.objects.for_tenant(acme.tenant).get(user=acme.owner)
    with pytest.raises(Conflict, match="needs an owner"):
        services.membership_role_change(
            tenant=acme.tenant, actor=acme.owner, membership_id=own.pk, role=Role.ADMIN
        )
    with pytest.raises(Conflict, match="needs an owner"):
        services.membership_remove(tenant=acme.tenant, actor=acme.owner, membership_id=own.pk)
    with pytest.raises(Conflict, match="needs an owner"):
        services.membership_leave(tenant=acme.tenant, user=acme.owner)
    assert _roles(acme) == {"owner@acme.test": "owner"}
    assert _actions(acme) == []


def test_with_a_second_owner_an_owner_may_step_down(acme: TenantCtx) -> None:
    make_member(tenant=acme.tenant, email="second@acme.test", role=Role.OWNER)
    own = Membership.objects.for_tenant(acme.tenant).get(user=acme.owner)
    services.membership_role_change(
        tenant=acme.tenant, actor=acme.owner, membership_id=own.pk, role=Role.VIEWER
    )
    assert _roles(acme) == {"owner@acme.test": "viewer", "second@acme.test": "owner"}
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="member.role")
    assert event.data == {"email": "owner@acme.test", "from": "owner", "to": "viewer"}


def test_an_admin_manages_developers_and_viewers_only(acme: TenantCtx) -> None:
    admin = make_member(tenant=acme.tenant, email="admin@acme.test", role=Role.ADMIN)
    make_member(tenant=acme.tenant, email="peer@acme.test", role=Role.ADMIN)
    make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER)
    ids = dict(Membership.objects.for_tenant(acme.tenant).values_list("user__email", "id"))
    refused = [
        (ids["dev@acme.test"], Role.ADMIN),  # escalation to a role the admin does not manage
        (ids["dev@acme.test"], Role.OWNER),
        (ids["peer@acme.test"], Role.VIEWER),  # another admin
        (ids["owner@acme.test"], Role.VIEWER),  # an owner
    ]
    for membership_id, role in refused:
        with pytest.raises(Forbidden):
            services.membership_role_change(
                tenant=acme.tenant, actor=admin, membership_id=membership_id, role=role
            )
    for membership_id in (ids["peer@acme.test"], ids["owner@acme.test"]):
        with pytest.raises(Forbidden):
            services.membership_remove(tenant=acme.tenant, actor=admin, membership_id=membership_id)
    before = {
        "owner@acme.test": "owner",
        "admin@acme.test": "admin",
        "peer@acme.test": "admin",
        "dev@acme.test": "developer",
    }
    assert _roles(acme) == before
    services.membership_role_change(
        tenant=acme.tenant, actor=admin, membership_id=ids["dev@acme.test"], role=Role.VIEWER
    )
    services.membership_remove(tenant=acme.tenant, actor=admin, membership_id=ids["dev@acme.test"])
    assert "dev@acme.test" not in _roles(acme)
    assert _actions(acme) == ["member.role", "member.remove"]


def test_another_tenants_member_is_not_found(acme: TenantCtx, globex: TenantCtx) -> None:
    theirs = Membership.objects.for_tenant(globex.tenant).get(user=globex.owner)
    with pytest.raises(NotFound):
        services.membership_role_change(
            tenant=acme.tenant, actor=acme.owner, membership_id=theirs.pk, role=Role.VIEWER
        )
    with pytest.raises(NotFound):
        services.membership_remove(tenant=acme.tenant, actor=acme.owner, membership_id=theirs.pk)
    assert _roles(globex) == {"owner@globex.test": "owner"}


def test_a_member_leaves(acme: TenantCtx) -> None:
    viewer = make_member(tenant=acme.tenant, email="v@acme.test", role=Role.VIEWER)
    services.membership_leave(tenant=acme.tenant, user=viewer)
    assert _roles(acme) == {"owner@acme.test": "owner"}
    assert User.objects.filter(email="v@acme.test").exists()
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="member.leave")
    assert (event.actor, event.data) == (
        "user:v@acme.test",
        {"email": "v@acme.test", "role": "viewer"},
    )


def test_signup_makes_a_suspended_tenant_until_verified(db: Any) -> None:
    """account_signup: owner of a new tenant on the default plan, suspended until the
    verification token is used; using it twice is harmless."""
    signed_up = services.account_signup(
        email="New@Example.Test", password="a-long-password-9", tenant_name="Newco"
    )
    assert signed_up.user.email == "new@example.test"
    assert signed_up.tenant.plan.slug == "developer"
    assert signed_up.tenant.is_active is False
    token = services.verification_token(user=signed_up.user)
    services.account_verify(token=token)
    services.account_verify(token=token)
    signed_up.tenant.refresh_from_db()
    assert signed_up.tenant.is_active is True
    actions = list(
        AuditEvent.objects.for_tenant(signed_up.tenant)
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["tenant.create", "account.signup", "account.verify"]
