"""Reads for tenants and keys: every query is scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet, Sum
from django.utils import timezone

from kernel.errors import NotFound
from tenants.models import ApiKey, AuditEvent, Membership, Tenant, UsageRecord, User

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
