"""Reads for tenants and keys: every query is scoped to one tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from django.core.exceptions import ValidationError
from django.db.models import F, QuerySet, Sum
from django.db.models.functions import Trunc, TruncDate
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.errors import NotFound
from kernel.redis_keys import USAGE_COUNTERS
from tenants.models import (
    AccountVerification,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    QuotaAlert,
    Tenant,
    UsageRecord,
    User,
)
from tenants.quotas import BY_NAME as QUOTAS_BY_NAME
from tenants.quotas import MONTHLY_QUOTAS, Quota, effective_quotas

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


#: The UsageRecord column each monthly quota (tenants.quotas.MONTHLY_QUOTAS) counts.
MONTHLY_USAGE_COLUMNS: Final[dict[str, str]] = {"monthly_messages": "published"}
#: What ``GET /v1/usage?by=`` breaks the series down by, and the UsageRecord field of each.
USAGE_BREAKDOWNS: Final[dict[str, str]] = {"key": "key_prefix", "resource": "resource"}
#: Every counted column of a UsageRecord row.
USAGE_COLUMNS: Final = tuple(USAGE_COUNTERS)


def _usage_rows(tenant: Tenant, start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    """Every usage row of the tenant in [start, end): totals, per key and per resource."""
    return UsageRecord.objects.for_tenant(tenant).filter(hour__gte=start, hour__lt=end)


def usage_list(*, tenant: Tenant, start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    """The tenant's total per hour in [start, end), oldest first (not the per-key and
    per-resource rows, which count the same traffic again)."""
    return _usage_rows(tenant, start, end).filter(key_prefix="", resource="").order_by("hour")


def usage_this_period(*, tenant: Tenant) -> dict[str, int | str]:
    """This calendar month's rolled-up traffic (the tenant's totals)."""
    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(hour__gte=start, key_prefix="", resource="")
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


def usage_series(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    granularity: str = "hour",
    by: str | None = None,
) -> list[dict[str, Any]]:
    """The tenant's usage in [start, end) summed per hour or per UTC day (``granularity``),
    oldest first, every column of USAGE_COLUMNS: ``{"start": datetime, column: int...}``.

    ``by`` None: the tenant's totals, one entry per period with traffic. ``by`` "key" or
    "resource" (USAGE_BREAKDOWNS): one entry per period and key prefix (``"key_prefix"``,
    with ``"key_id"`` and ``"key_name"`` of that key, None once it is deleted) or resource
    (``"resource"``, "<kind>:<name>"), ordered by it within a period; periods and scopes
    without a row are left out."""
    field = USAGE_BREAKDOWNS[by] if by else None
    rows = _usage_rows(tenant, start, end)
    rows = rows.exclude(**{field: ""}) if field else rows.filter(key_prefix="", resource="")
    group = ["bucket", field] if field else ["bucket"]
    aggregated = (
        rows.annotate(bucket=Trunc("hour", granularity, tzinfo=UTC))
        .order_by()
        .values(*group)
        .annotate(**{f"sum_{column}": Sum(column) for column in USAGE_COLUMNS})
        .order_by(*group)
    )
    series = [
        {
            "start": row["bucket"],
            **({field: row[field]} if field else {}),
            **{column: int(row[f"sum_{column}"]) for column in USAGE_COLUMNS},
        }
        for row in aggregated
    ]
    if by == "key":
        prefixes = {entry["key_prefix"] for entry in series}
        keys = {k.prefix: k for k in ApiKey.objects.for_tenant(tenant).filter(prefix__in=prefixes)}
        for entry in series:
            key = keys.get(entry["key_prefix"])
            entry["key_id"] = key.id if key else None
            entry["key_name"] = key.name if key else None
    return series


def usage_top(
    *, tenant: Tenant, start: datetime, end: datetime, by: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The ``limit`` keys or resources (``by``, as in :func:`usage_series`) with the most
    messages published and delivered together in [start, end), busiest first (ties by
    name): ``{"scope": prefix or "<kind>:<name>", column: int...}``. For keys also
    ``"key"``: the ApiKey of that prefix (None once it is deleted)."""
    field = USAGE_BREAKDOWNS[by]
    rows = list(
        _usage_rows(tenant, start, end)
        .exclude(**{field: ""})
        .order_by()
        .values(field)
        .annotate(**{f"sum_{column}": Sum(column) for column in USAGE_COLUMNS})
        .annotate(weight=F("sum_published") + F("sum_delivered"))
        .order_by("-weight", field)[:limit]
    )
    keys: dict[str, ApiKey] = {}
    if by == "key":
        prefixes = [row[field] for row in rows]
        keys = {k.prefix: k for k in ApiKey.objects.for_tenant(tenant).filter(prefix__in=prefixes)}
    return [
        {
            "scope": row[field],
            **({"key": keys.get(row[field])} if by == "key" else {}),
            **{column: int(row[f"sum_{column}"]) for column in USAGE_COLUMNS},
        }
        for row in rows
    ]


@dataclass(frozen=True)
class MonthlyQuotaUse:
    """What the tenant has used this calendar month of one monthly quota."""

    quota: Quota
    used: int
    limit: int | None  #: None: unlimited
    source: str  #: where the limit comes from: "plan" or "tenant" (an operator's override)
    alerts: tuple[int, ...]  #: the alert percentages already emailed this month

    @property
    def percent(self) -> int | None:
        """The share of the limit used, in whole percent (None: unlimited, or a limit of 0)."""
        return self.used * 100 // self.limit if self.limit else None


def monthly_quota_usage(*, tenant: Tenant, now: datetime | None = None) -> list[MonthlyQuotaUse]:
    """Each monthly quota (MONTHLY_QUOTAS, its effective value) against the rolled-up
    totals of the calendar month of ``now``, in catalogue order."""
    moment = (now or timezone.now()).astimezone(UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    columns = sorted({MONTHLY_USAGE_COLUMNS[name] for name in MONTHLY_QUOTAS})
    totals = (
        _usage_rows(tenant, start, end)
        .filter(key_prefix="", resource="")
        .aggregate(**{f"sum_{column}": Sum(column) for column in columns})
    )
    sent: dict[str, list[int]] = {}
    for quota, percent in (
        QuotaAlert.objects.for_tenant(tenant)
        .filter(period=f"{start:%Y-%m}")
        .order_by("percent")
        .values_list("quota", "percent")
    ):
        sent.setdefault(quota, []).append(percent)
    effective = effective_quotas(tenant)
    return [
        MonthlyQuotaUse(
            quota=QUOTAS_BY_NAME[name],
            used=int(totals[f"sum_{MONTHLY_USAGE_COLUMNS[name]}"] or 0),
            limit=effective[name].value,
            source=effective[name].source,
            alerts=tuple(sent.get(name, ())),
        )
        for name in MONTHLY_QUOTAS
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
