"""Reads for tenants and keys: every query is scoped to one tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.errors import NotFound
from tenants.models import (
    AccountVerification,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Tenant,
    UsageRecord,
    User,
)

#: The session key naming the tenant a console user acts for (the console and the API's
#: session authentication read it the same way: :func:`session_membership`).
SESSION_TENANT = "tenant_id"


def user_memberships(user: User) -> QuerySet[Membership]:
    """A person's memberships in every tenant, oldest first: the first is where a login
    lands."""
    return (
        Membership.all_tenants.filter(user=user)
        .select_related("tenant__plan")
        .order_by("created_at", "id")
    )


def session_membership(
    memberships: Sequence[Membership], tenant_id: str | None
) -> Membership | None:
    """The membership of the tenant a session names, else the first (a session naming a
    tenant the user has left falls back to it); None for a person in no tenant."""
    chosen = next((m for m in memberships if str(m.tenant_id) == tenant_id), None)
    return chosen or (memberships[0] if memberships else None)


def key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_tenant(tenant).order_by("-created_at", "id")


def audit_event_list(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.for_tenant(tenant).order_by("-created_at", "-id")


def usage_list(*, tenant: Tenant, start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    return (
        UsageRecord.objects.for_tenant(tenant)
        .filter(hour__gte=start, hour__lt=end)
        .order_by("hour")
    )


def usage_this_period(*, tenant: Tenant) -> dict[str, int | str]:
    """This calendar month's rolled-up traffic."""
    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(hour__gte=start)
        .aggregate(
            published=Sum("published"),
            published_bytes=Sum("published_bytes"),
            delivered=Sum("delivered"),
            acked=Sum("acked"),
        )
    )
    return {
        "period_start": start.isoformat().replace("+00:00", "Z"),
        **{name: int(value or 0) for name, value in totals.items()},
    }


def key_get(*, tenant: Tenant, key_id: str) -> ApiKey:
    """One of this tenant's keys; NotFound for another tenant's or a malformed id."""
    try:
        return ApiKey.objects.for_tenant(tenant).get(pk=key_id)
    except (ApiKey.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFound("No such API key.") from exc


# --- people ----------------------------------------------------------------------------------


def invitation_token_hash(token: str) -> str:
    """What an invitation row keeps of its link's token (SHA-256, hex: tokens are 256
    random bits, so a fast hash is enough)."""
    return hashlib.sha256(token.encode()).hexdigest()


def member_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.for_tenant(tenant).select_related("user").order_by("created_at", "id")


def invitation_list(*, tenant: Tenant) -> QuerySet[Invitation]:
    """This tenant's invitations that can still be accepted, newest first."""
    return (
        Invitation.objects.for_tenant(tenant)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .order_by("-created_at")
    )


def invitation_by_token(*, token: str) -> Invitation | None:
    """The invitation of a link (any state: the page explains a used, revoked or expired
    one)."""
    return (
        Invitation.all_tenants.select_related("tenant", "invited_by")
        .filter(token_hash=invitation_token_hash(token))
        .first()
    )


def invitations_for_email(*, email: str) -> QuerySet[Invitation]:
    """The pending invitations of one address, across tenants (the person's own: shown only
    to that signed-in address)."""
    return (
        Invitation.all_tenants.select_related("tenant")
        .filter(
            email=email.lower(),
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .order_by("-created_at")
    )


def is_verified(user: User) -> bool:
    """False only for a self-service sign-up whose address is not confirmed yet."""
    return not AccountVerification.objects.filter(user=user, verified_at__isnull=True).exists()


def has_two_factor(user: User) -> bool:
    """Whether signing in asks for an authenticator code after the password."""
    return bool(TOTPDevice.objects.filter(user=user, confirmed=True).exists())


def backup_codes_left(*, user: User) -> int:
    """How many of the user's backup codes are still unused."""
    return int(StaticToken.objects.filter(device__user=user, device__confirmed=True).count())


def totp_pending(*, user: User) -> TOTPDevice | None:
    """The authenticator being set up (not confirmed yet), if any."""
    return TOTPDevice.objects.filter(user=user, confirmed=False).first()


def usage_per_day(*, tenant: Tenant, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The tenant's hourly usage rows from ``start`` to ``end`` (exclusive) summed per UTC day,
    oldest first: ``{"day": date, "published", "delivered", "acked"}``; days with no row are
    left out."""
    rows = (
        usage_list(tenant=tenant, start=start, end=end)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .order_by()
        .values("day")
        .annotate(published=Sum("published"), delivered=Sum("delivered"), acked=Sum("acked"))
        .order_by("day")
    )
    return [
        {
            "day": row["day"],
            "published": int(row["published"]),
            "delivered": int(row["delivered"]),
            "acked": int(row["acked"]),
        }
        for row in rows
    ]


def audit_event_search(
    *,
    tenant: Tenant,
    actor: str = "",
    action: str = "",
    target_type: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """The tenant's audit events, newest first, narrowed by whichever filters are given:
    ``actor`` and ``action`` match exactly, or as a prefix when they end with ``*``
    (``key.*``); ``target_type`` exactly; ``since`` inclusive, ``until`` exclusive."""
    events = audit_event_list(tenant=tenant)
    for field, value in (("actor", actor), ("action", action)):
        if value.endswith("*"):
            events = events.filter(**{f"{field}__startswith": value[:-1]})
        elif value:
            events = events.filter(**{field: value})
    if target_type:
        events = events.filter(target_type=target_type)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


def audit_filter_choices(*, tenant: Tenant) -> dict[str, list[str]]:
    """The distinct actors, actions and target types of the tenant's audit trail, sorted: what
    the audit page's filters offer."""
    events = AuditEvent.objects.for_tenant(tenant).order_by()
    return {
        field: sorted(events.values_list(field, flat=True).distinct())
        for field in ("actor", "action", "target_type")
    }
