"""Writes for tenants, people and API keys. Each service is one transaction that also writes
its audit record, and pushes the new state to the hot cache only once it has committed."""

from __future__ import annotations

import logging
import math
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from smtplib import SMTPException
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.errors import Conflict, Forbidden, InvalidRequest, NotFound, QuotaExceeded, RateLimited
from kernel.redis_client import get_redis
from kernel.redis_keys import (
    USAGE_COUNTERS,
    is_usage_month_field,
    parse_usage_field,
    usage_key,
)
from tenants.authority import Authority, check_grant
from tenants.models import (
    ALL_SCOPES,
    AccountVerification,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Plan,
    QuotaAlert,
    Role,
    Tenant,
    UsageRecord,
    User,
)
from tenants.principals import (
    KEY_PREFIX_LEN,
    hash_secret,
    key_cache,
    key_document,
    tenant_cache,
    tenant_document,
)
from tenants.quotas import BY_NAME, MONTHLY_QUOTAS, Effective, effective_quotas, validate_overrides
from tenants.selectors import MONTHLY_USAGE_COLUMNS, invitation_token_hash

DEFAULT_PLAN = "developer"
RESOURCE_PATTERN = re.compile(r"^(queue|topic|subscription):[A-Za-z0-9._*?\[\]-]{1,128}$")
_ALPHABET = string.ascii_letters + string.digits


def audit(
    *,
    tenant: Tenant,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record who did what; call it inside the transaction of the change it describes."""
    return AuditEvent.all_tenants.create(
        tenant=tenant,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=data or {},
    )


def default_plan() -> Plan:
    plan, _ = Plan.objects.get_or_create(slug=DEFAULT_PLAN, defaults={"name": "Developer"})
    return plan


@dataclass(frozen=True)
class TenantCreated:
    tenant: Tenant
    owner: User
    membership: Membership


@transaction.atomic
def tenant_create(
    *,
    name: str,
    owner_email: str,
    owner_password: str | None = None,
    plan: Plan | None = None,
    slug: str | None = None,
    actor: str = "operator",
) -> TenantCreated:
    """Create a tenant with its owner (an existing user joins as owner; a new one is created,
    with an unusable password unless one is given). A taken slug is a Conflict."""
    slug = slug or slugify(name)[:64]
    if not slug:
        raise InvalidRequest("A tenant needs a name with at least one letter or digit.")
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"A tenant '{slug}' already exists.")
    tenant = Tenant.objects.create(name=name, slug=slug, plan=plan or default_plan())
    email = owner_email.strip().lower()
    owner = User.objects.filter(email=email).first()
    if owner is None:
        owner = User.objects.create_user(email, owner_password)
    membership = Membership.all_tenants.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit(
        tenant=tenant,
        actor=actor,
        action="tenant.create",
        target_type="tenant",
        target_id=str(tenant.id),
        data={"name": name, "owner": email},
    )
    transaction.on_commit(lambda: tenant_cache.push(str(tenant.id), tenant_document(tenant)))
    return TenantCreated(tenant=tenant, owner=owner, membership=membership)


@transaction.atomic
def tenant_quotas_set(*, tenant: Tenant, actor: str, overrides: dict[str, Any]) -> Tenant:
    """Replace the operator's quota overrides of ``tenant`` with ``overrides`` (the whole
    set: ``{quota: number, or None for unlimited}``; a quota left out follows the plan
    again). Bad names or values are InvalidRequest naming the entry, and change nothing.

    The tenant row is locked (creations counted against a quota wait for the commit), the
    change is audited as ``tenant.quotas_set`` with ``before`` and ``after``, and the
    tenant's hot-cache document is pushed once it has committed, so the data plane applies
    the new limits within one cache push. Setting the overrides it already has changes
    nothing and is not audited. Returns the tenant as saved."""
    try:
        clean = validate_overrides(overrides)
    except ValueError as exc:
        name = next(iter(str(exc).split(":", 1)))
        raise InvalidRequest(str(exc), errors=_field(name, str(exc))) from exc
    locked, _ = _locked_tenant_quotas(tenant)
    before = dict(locked.quota_overrides or {})
    if before == clean:
        return locked
    locked.quota_overrides = clean
    locked.save(update_fields=["quota_overrides"])
    audit(
        tenant=locked,
        actor=actor,
        action="tenant.quotas_set",
        target_type="tenant",
        target_id=str(locked.id),
        data={"before": before, "after": clean},
    )
    transaction.on_commit(lambda: tenant_cache.push(str(locked.id), tenant_document(locked)))
    return locked


@dataclass(frozen=True)
class KeyCreated:
    key: ApiKey
    secret: str  # the whole token op_<prefix>_<secret>: shown once, never stored


def _clean_scopes(scopes: list[str]) -> list[str]:
    if not scopes:
        raise InvalidRequest("A key needs at least one scope.", errors=_field("scopes"))
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise InvalidRequest(
            f"Unknown scopes {unknown}; valid scopes are {ALL_SCOPES}.", errors=_field("scopes")
        )
    return [scope for scope in ALL_SCOPES if scope in scopes]


def _clean_resources(resources: list[str]) -> list[str]:
    bad = [pattern for pattern in resources if not RESOURCE_PATTERN.match(pattern)]
    if bad:
        raise InvalidRequest(
            f"Invalid resource patterns {bad}: expected '<queue|topic|subscription>:<name>', "
            "where the name may use * and ? wildcards.",
            errors=_field("resources"),
        )
    return list(dict.fromkeys(resources))


def _field(name: str, detail: str | None = None) -> list[dict[str, Any]]:
    return [{"field": name, "detail": detail or f"Invalid {name}."}]


#: The largest value of each limit an API key may set (the columns' ranges).
KEY_LIMIT_MAX: dict[str, int] = {
    "publish_rate_per_second": 2**31 - 1,
    "consume_rate_per_second": 2**31 - 1,
    "monthly_messages": 2**63 - 1,
}


def _clean_key_limits(limits: dict[str, Any]) -> dict[str, int | None]:
    """A key's own limits (tenants.quotas.KEY_QUOTAS): each a whole number from 1, or None
    for the tenant's. A value above the tenant's own limit is accepted and kept, but the
    tighter one holds (tenants.quotas.key_quotas), so it changes nothing until the tenant's
    limit rises."""
    clean: dict[str, int | None] = {}
    for name, value in limits.items():
        top = KEY_LIMIT_MAX[name]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top
        ):
            detail = f"A whole number from 1 to {top}, or null for the tenant's limit."
            raise InvalidRequest(f"{name}: {detail}", errors=_field(name, detail))
        clean[name] = value
    return clean


def _locked_tenant_quotas(tenant: Tenant) -> tuple[Tenant, dict[str, Effective]]:
    """``tenant`` read again with its row locked until the commit, and its effective quotas:
    creations counted against a quota take this lock, so concurrent ones cannot overshoot."""
    locked = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
    return locked, effective_quotas(locked)


@transaction.atomic
def key_create(
    *,
    tenant: Tenant,
    name: str,
    scopes: list[str],
    resources: list[str] | None = None,
    expires_at: datetime | None = None,
    actor: str,
    authority: Authority,
    publish_rate_per_second: int | None = None,
    consume_rate_per_second: int | None = None,
    monthly_messages: int | None = None,
) -> KeyCreated:
    """Issue an API key. The returned ``secret`` is the only copy of the token.

    ``authority`` is the caller's (tenants.authority): the new key must be within it, or this
    raises Forbidden and stores nothing. It has no default, so no caller is unlimited by
    forgetting it: operator code (manage.py commands, the demo) passes
    ``tenants.authority.OPERATOR``.

    The key's own limits (publish and consume rates, monthly messages; None: the tenant's)
    narrow the tenant's for requests made with it; see :func:`_clean_key_limits`. More live
    keys than the tenant's effective ``max_api_keys`` is QuotaExceeded, counted with the
    tenant row locked."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("A key needs a name of 1 to 100 characters.", errors=_field("name"))
    clean_scopes = _clean_scopes(scopes)
    clean_resources = _clean_resources(resources or [])
    limits = _clean_key_limits(
        {
            "publish_rate_per_second": publish_rate_per_second,
            "consume_rate_per_second": consume_rate_per_second,
            "monthly_messages": monthly_messages,
        }
    )
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("expires_at must be in the future.", errors=_field("expires_at"))
    check_grant(authority, scopes=clean_scopes, resources=clean_resources, expires_at=expires_at)
    tenant, quotas = _locked_tenant_quotas(tenant)
    cap = quotas["max_api_keys"]
    live = ApiKey.objects.for_tenant(tenant).filter(revoked_at__isnull=True).count()
    if cap.value is not None and live >= cap.value:
        origin = "this tenant's override" if cap.source == "tenant" else "the plan"
        raise QuotaExceeded(
            f"Quota max_api_keys reached: {origin} allows {cap.value} active API keys, and "
            f"this tenant has {live}."
        )
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(40))
    for _ in range(5):
        prefix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        assert len(prefix) == KEY_PREFIX_LEN
        try:
            with transaction.atomic():
                key = ApiKey.all_tenants.create(
                    tenant=tenant,
                    name=name,
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    scopes=clean_scopes,
                    resources=clean_resources,
                    expires_at=expires_at,
                    created_by=actor,
                    **limits,
                )
            break
        except IntegrityError:  # a prefix collision: 36^10 makes a second one unthinkable
            continue
    else:  # pragma: no cover
        raise Conflict("Could not allocate a unique key prefix; try again.")
    audit(
        tenant=tenant,
        actor=actor,
        action="key.create",
        target_type="key",
        target_id=str(key.id),
        data={
            "name": name,
            "scopes": clean_scopes,
            "resources": clean_resources,
            **{limit: value for limit, value in limits.items() if value is not None},
        },
    )
    doc = key_document(key)
    transaction.on_commit(lambda: key_cache.push(key.prefix, doc))
    return KeyCreated(key=key, secret=f"op_{key.prefix}_{secret}")


@transaction.atomic
def key_revoke(*, tenant: Tenant, key_id: str, actor: str, authority: Authority) -> ApiKey:
    """Revoke a key everywhere (within one hot-cache TTL). Revoking twice is harmless.

    A key beyond the caller's ``authority`` is NotFound, exactly like one that does not
    exist (a limited caller never learns of keys it could not have made). Required, like
    key_create's: operator code passes ``tenants.authority.OPERATOR``."""
    try:
        key = ApiKey.objects.for_tenant(tenant).select_for_update().get(pk=key_id)
    except (ApiKey.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFound("No such API key.") from exc
    if not authority.covers_key(key):
        raise NotFound("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit(
            tenant=tenant,
            actor=actor,
            action="key.revoke",
            target_type="key",
            target_id=str(key.id),
            data={"name": key.name},
        )
    doc = key_document(key)
    transaction.on_commit(lambda: key_cache.push(key.prefix, doc))
    return key


def key_flush_last_used(*, updates: dict[str, int]) -> int:
    """Write last-used times collected by the data plane (prefix → epoch seconds)."""
    changed = 0
    for prefix, epoch in updates.items():
        when = datetime.fromtimestamp(epoch, tz=UTC)
        changed += ApiKey.all_tenants.filter(prefix=prefix).update(last_used_at=when)
    return changed


USAGE_KEEP_HOURS = 3
#: The UsageRecord columns the data plane counts, in the order the upsert writes them.
USAGE_COLUMNS: tuple[str, ...] = tuple(USAGE_COUNTERS)
#: Shares of a monthly quota (percent) whose reaching is emailed, lowest first.
QUOTA_ALERT_PERCENTS = (80, 100)
#: Who the audit trail names for what the metering does on its own.
METERING_ACTOR = "system:metering"
#: Rows per INSERT of the roll-up (11 parameters each, far below PostgreSQL's 65535).
_UPSERT_BATCH = 1000
_SCOPE_MAX = {
    "key_prefix": UsageRecord._meta.get_field("key_prefix").max_length or 0,
    "resource": UsageRecord._meta.get_field("resource").max_length or 0,
}
#: An hour's counts of one scope: (hour epoch, key prefix, resource); "" and "": the tenant's.
UsageScope = tuple[int, str, str]
logger = logging.getLogger(__name__)


def _month_start(moment: datetime, months_back: int = 0) -> datetime:
    """Midnight UTC on the first day of ``moment``'s month, ``months_back`` months earlier."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 - months_back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _parse_usage(raw: dict[bytes, bytes]) -> dict[UsageScope, dict[str, int]]:
    """The hourly counts in a tenant's usage hash by scope: ``{(hour epoch, key prefix,
    resource): {column: count}}``, the tenant's total, each key's and each resource's.

    Other fields (a month's published count, the tenant's or a key's, read by the publish
    script's quota check) are not hours and are left out; so is a scope longer than its
    column, which nothing writes today and which would fail the whole batch's insert."""
    rows: dict[UsageScope, dict[str, int]] = {}
    for field, value in raw.items():
        parsed = parse_usage_field(field.decode(errors="replace"))
        if (
            parsed is None
            or len(parsed.key_prefix) > _SCOPE_MAX["key_prefix"]
            or len(parsed.resource) > _SCOPE_MAX["resource"]
        ):
            continue
        scope = (parsed.hour, parsed.key_prefix, parsed.resource)
        rows.setdefault(scope, {})[parsed.column] = int(value)
    return rows


def _usage_upsert(rows: list[tuple[Any, ...]]) -> None:
    """Insert or update ``rows`` (tenant id, hour, key prefix, resource, then USAGE_COLUMNS),
    _UPSERT_BATCH a statement.

    A row already there keeps the larger of each count (GREATEST, not the value read): the
    counters only grow within their hour, so a roll-up that read them before another one did
    and writes after it (a task retried late, two workers at once) cannot lower a row. Rows
    come sorted by scope, so concurrent roll-ups lock them in the same order and never
    deadlock."""
    quote = connection.ops.quote_name
    table = quote(UsageRecord._meta.db_table)
    columns = ", ".join(
        quote(c) for c in ("tenant_id", "hour", "key_prefix", "resource", *USAGE_COLUMNS)
    )
    updates = ", ".join(
        f"{quote(c)} = GREATEST({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in USAGE_COLUMNS
    )
    # A row no count of which grows is left alone: no new row version, no WAL, although
    # every run reads the last USAGE_KEEP_HOURS hours again.
    grows = " OR ".join(f"{table}.{quote(c)} < EXCLUDED.{quote(c)}" for c in USAGE_COLUMNS)
    row_placeholder = "(" + ", ".join(["%s"] * (4 + len(USAGE_COLUMNS))) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _UPSERT_BATCH):
            batch = rows[start : start + _UPSERT_BATCH]
            # Only identifiers of the model and placeholders are spliced in: no input.
            sql = (
                f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
                + ", ".join([row_placeholder] * len(batch))
                + " ON CONFLICT (tenant_id, hour, key_prefix, resource) DO UPDATE SET "
                + updates
                + " WHERE "
                + grows
            )
            cursor.execute(sql, [value for row in batch for value in row])


def usage_rollup(*, now: datetime | None = None, chunk: int = 500) -> int:
    """Copy the data plane's per-hour counters (one Redis hash per tenant, written by the Lua
    scripts) into UsageRecord: one row per tenant, hour and scope (the tenant's total, each
    API key's, each queue's, topic's and subscription's), every column of USAGE_COUNTERS
    (a count the hash lacks is 0).

    Every tenant is read, suspended ones too: a tenant suspended during an hour still had
    that hour's traffic. The counters are totals per hour, so a row is overwritten with what
    was read, never added to, and never lowered (see :func:`_usage_upsert`): a retry or two
    workers at once write the same rows. Once a chunk's rows are written, hourly fields
    older than USAGE_KEEP_HOURS hours leave Redis (their rows are final) and so do monthly
    published counts (the tenant's and each key's) older than the previous month. Returns
    the number of rows written."""
    redis = get_redis()
    moment = now or timezone.now()
    oldest_hour = int(moment.timestamp()) // 3600 - USAGE_KEEP_HOURS
    keep_months = {f"{m:%Y%m}" for m in (_month_start(moment), _month_start(moment, 1))}
    tenant_ids = list(Tenant.objects.order_by("id").values_list("id", flat=True))
    written = 0
    for start in range(0, len(tenant_ids), chunk):
        batch = tenant_ids[start : start + chunk]
        pipe = redis.pipeline(transaction=False)
        for tenant_id in batch:
            pipe.hgetall(usage_key(str(tenant_id)))
        rows: list[tuple[Any, ...]] = []
        stale: dict[str, list[bytes]] = {}
        for tenant_id, raw in zip(batch, pipe.execute(), strict=True):
            for (hour, prefix, resource), counts in sorted(_parse_usage(raw).items()):
                when = datetime.fromtimestamp(hour * 3600, tz=UTC)
                values = (counts.get(column, 0) for column in USAGE_COLUMNS)
                rows.append((tenant_id, when, prefix, resource, *values))
            old = [
                field
                for field in raw
                if _is_stale(field.decode(errors="replace"), oldest_hour, keep_months)
            ]
            if old:
                stale[str(tenant_id)] = old
        with transaction.atomic():
            _usage_upsert(rows)
        written += len(rows)
        if stale:  # only once their rows are in PostgreSQL
            pipe = redis.pipeline(transaction=False)
            for ident, fields in stale.items():
                pipe.hdel(usage_key(ident), *fields)
            pipe.execute()
    return written


def _is_stale(field: str, oldest_hour: int, keep_months: set[str]) -> bool:
    """Whether a usage hash field may leave Redis: an hour's count of any scope older than
    ``oldest_hour``, or a month's published count (the tenant's or a key's) of a month not in
    ``keep_months`` ("YYYYMM"). Fields of a shape this version does not know stay."""
    hourly = parse_usage_field(field)
    if hourly is not None:
        return hourly.hour < oldest_hour
    return is_usage_month_field(field) and field[1:7] not in keep_months


def usage_trim(*, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete the UsageRecord rows of hours before the months kept: the current calendar
    month and the settings.USAGE_KEEP_MONTHS months before it (13: a full year back and the
    month before, for comparing a month with the same one a year earlier). Deletes
    ``batch`` rows a statement, so no statement locks a whole year of rows. Returns how many
    rows went."""
    cutoff = _month_start(now or timezone.now(), settings.USAGE_KEEP_MONTHS)
    old = UsageRecord.all_tenants.filter(hour__lt=cutoff)
    deleted = 0
    while ids := list(old.order_by("id").values_list("id", flat=True)[:batch]):
        deleted += UsageRecord.all_tenants.filter(id__in=ids).delete()[0]
    return deleted


@dataclass(frozen=True)
class QuotaAlertDue:
    """A monthly quota a tenant has used ``percent`` % of (a QUOTA_ALERT_PERCENTS step)."""

    tenant: Tenant
    quota: str
    period: str
    percent: int
    used: int
    limit: int


def usage_alerts_due(*, now: datetime | None = None) -> list[QuotaAlertDue]:
    """The alerts the rolled-up usage of the calendar month of ``now`` calls for and that
    were not sent yet: per tenant and monthly quota (MONTHLY_QUOTAS, at the value
    effective_quotas gives; None or 0 sends nothing), the highest QUOTA_ALERT_PERCENTS step
    its use has reached. Only the highest: a tenant that goes from 50 % to 100 % between two
    roll-ups gets the 100 % alert alone. Suspended tenants are included."""
    start = _month_start(now or timezone.now())
    end = _month_start(start + timedelta(days=32))
    period = f"{start:%Y-%m}"
    columns = sorted({MONTHLY_USAGE_COLUMNS[name] for name in MONTHLY_QUOTAS})
    sums = (
        UsageRecord.all_tenants.filter(hour__gte=start, hour__lt=end, key_prefix="", resource="")
        .values("tenant_id")
        .annotate(**{f"used_{column}": Sum(column) for column in columns})
        .values_list("tenant_id", *(f"used_{column}" for column in columns))
    )
    used = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in sums}
    sent = set(
        QuotaAlert.all_tenants.filter(period=period, tenant_id__in=used).values_list(
            "tenant_id", "quota", "percent"
        )
    )
    due: list[QuotaAlertDue] = []
    for tenant in Tenant.objects.filter(id__in=used).select_related("plan").order_by("id"):
        quotas = effective_quotas(tenant)
        for name in MONTHLY_QUOTAS:
            limit = quotas[name].value
            count = int(used[tenant.id][MONTHLY_USAGE_COLUMNS[name]] or 0)
            reached = [p for p in QUOTA_ALERT_PERCENTS if limit and count * 100 >= p * limit]
            if limit and reached and (tenant.id, name, reached[-1]) not in sent:
                due.append(QuotaAlertDue(tenant, name, period, reached[-1], count, limit))
    return due


def quota_alert_send(*, alert: QuotaAlertDue) -> QuotaAlert | None:
    """Email one alert to the tenant's owners and admins (one message, all of them as
    recipients) and audit it as ``quota.alert``, once: the QuotaAlert row (unique per
    tenant, quota, period and percent) is inserted in the same transaction before the
    email goes, so a second worker's insert waits for this one and then fails, and that
    worker sends nothing. None when the alert was already sent.

    When sending fails (SMTPException or OSError: the mail server refused or cannot be
    reached) the transaction rolls back, the row with it, and the next roll-up tries again;
    the error is logged and None returned, so one tenant's mail does not stop the others'.
    A commit failing after the email went could send it twice; that is the rarer and
    cheaper mistake than an alert never sent."""
    tenant = alert.tenant
    recipients = list(
        Membership.all_tenants.filter(
            tenant=tenant, role__in=[Role.OWNER, Role.ADMIN], user__is_active=True
        )
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )
    quota = BY_NAME[alert.quota]
    context = {
        "tenant": tenant,
        "quota": quota,
        "period": alert.period,
        "percent": alert.percent,
        "used": alert.used,
        "limit": alert.limit,
    }
    subject = f"{tenant.name}: {alert.percent}% of a monthly quota used in {alert.period}"
    try:
        with transaction.atomic():
            row = QuotaAlert.all_tenants.create(
                tenant=tenant, quota=alert.quota, period=alert.period, percent=alert.percent
            )
            audit(
                tenant=tenant,
                actor=METERING_ACTOR,
                action="quota.alert",
                target_type="quota",
                target_id=alert.quota,
                data={
                    "period": alert.period,
                    "percent": alert.percent,
                    "used": alert.used,
                    "limit": alert.limit,
                    "recipients": len(recipients),
                },
            )
            body = render_to_string("email/quota_alert.txt", context)
            send_mail(subject, body, None, recipients)
    except IntegrityError:
        return None  # another worker has sent it
    except (SMTPException, OSError):
        logger.exception(
            "quota alert %s %s %s%% of tenant %s not sent; the next roll-up retries",
            alert.quota,
            alert.period,
            alert.percent,
            tenant.id,
        )
        return None
    return row


def usage_alerts(*, now: datetime | None = None) -> list[QuotaAlert]:
    """Send every alert :func:`usage_alerts_due` finds (run right after the roll-up, in
    the same task); returns the alerts sent by this call."""
    sent = (quota_alert_send(alert=alert) for alert in usage_alerts_due(now=now))
    return [row for row in sent if row is not None]


# --- people: sign-up, email verification, invitations, members, two-factor ---------------------

VERIFY_SALT = "tenants.account_verify"


def _actor(user: User) -> str:
    return f"user:{user.email}"


def _audit_account(*, user: User, action: str, data: dict[str, Any] | None = None) -> None:
    """An account's own change, recorded in the trail of every tenant the person belongs to
    (the trail is per tenant; an account belongs to all of its tenants alike)."""
    for membership in Membership.all_tenants.filter(user=user).select_related("tenant"):
        audit(
            tenant=membership.tenant,
            actor=_actor(user),
            action=action,
            target_type="user",
            target_id=str(user.pk),
            data=data,
        )


@dataclass(frozen=True)
class SignedUp:
    user: User
    tenant: Tenant


@transaction.atomic
def account_signup(*, email: str, password: str, tenant_name: str, address: str = "") -> SignedUp:
    """A new person with a new tenant on the default plan, of which they are the owner.

    The tenant starts suspended (read-only in the console, its keys refused) until the
    address is confirmed with :func:`account_verify`. An address that already has an account
    is a Conflict; more than ``SIGNUPS_PER_ADDRESS_PER_HOUR`` sign-ups from one client
    ``address`` within an hour are RateLimited. Either way nothing is stored."""
    email = email.strip().lower()
    if User.objects.filter(email=email).exists():
        raise Conflict(
            "An account with this email address exists: sign in, or reset its password.",
            errors=_field("email", "An account with this email address exists."),
        )
    limit = settings.SIGNUPS_PER_ADDRESS_PER_HOUR
    if limit and address:
        since = timezone.now() - timedelta(hours=1)
        recent = AccountVerification.objects.filter(
            signup_address=address, created_at__gte=since
        ).count()
        if recent >= limit:
            raise RateLimited("Too many sign-ups from your address; try again in an hour.")
    created = tenant_create(
        name=tenant_name, owner_email=email, owner_password=password, actor=f"user:{email}"
    )
    tenant = created.tenant
    tenant.is_active = False  # the cache push queued by tenant_create reads this at commit
    tenant.save(update_fields=["is_active"])
    AccountVerification.objects.create(
        user=created.owner, pending_tenant=tenant, signup_address=address[:64]
    )
    audit(
        tenant=tenant,
        actor=_actor(created.owner),
        action="account.signup",
        target_type="user",
        target_id=str(created.owner.pk),
        data={"email": email},
    )
    return SignedUp(user=created.owner, tenant=tenant)


def verification_token(*, user: User) -> str:
    """The signed token of an email verification link (it names the user and the address,
    so it stops working if the address changes; it expires after
    EMAIL_VERIFICATION_MAX_AGE_SECONDS)."""
    return signing.dumps({"u": str(user.pk), "e": user.email}, salt=VERIFY_SALT, compress=True)


def _mark_verified(user: User) -> bool:
    row = AccountVerification.objects.select_for_update().filter(user=user).first()
    if row is None or row.verified_at is not None:
        return False
    row.verified_at = timezone.now()
    row.save(update_fields=["verified_at"])
    tenant = row.pending_tenant
    if tenant is not None:
        tenant.is_active = True
        tenant.save(update_fields=["is_active"])
        doc = tenant_document(tenant)
        transaction.on_commit(lambda: tenant_cache.push(str(tenant.id), doc))
    _audit_account(user=user, action="account.verify", data={"email": user.email})
    return True


@transaction.atomic
def account_verify(*, token: str) -> User:
    """Confirm the address a verification token names: the account counts as verified and
    the tenant made at its sign-up is activated. Using a link twice is harmless. A forged,
    expired or outdated token (the address changed) is InvalidRequest."""
    try:
        payload = signing.loads(
            token, salt=VERIFY_SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS
        )
    except signing.SignatureExpired as exc:
        raise InvalidRequest("This verification link has expired; ask for a new one.") from exc
    except signing.BadSignature as exc:
        raise InvalidRequest("This verification link is not valid.") from exc
    user = User.objects.filter(pk=payload.get("u"), email=payload.get("e")).first()
    if user is None:
        raise InvalidRequest("This verification link is not valid.")
    _mark_verified(user)
    return user


@transaction.atomic
def verification_resend(*, user: User) -> bool:
    """Whether a new verification email may go out now (and note that it does): at most one
    per SIGNUP_RESEND_SECONDS per account, none for a verified account."""
    row = AccountVerification.objects.select_for_update().filter(user=user).first()
    if row is None or row.verified_at is not None:
        return False
    now = timezone.now()
    if now - row.last_sent_at < timedelta(seconds=settings.SIGNUP_RESEND_SECONDS):
        return False
    row.last_sent_at = now
    row.save(update_fields=["last_sent_at"])
    return True


# Which roles a member may give, change and take away, by their own role. Only owners touch
# owners; admins manage developers and viewers; the others manage nobody.
MANAGEABLE_ROLES: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(Role.values),
    Role.ADMIN: frozenset({Role.DEVELOPER.value, Role.VIEWER.value}),
}


def manageable_roles(role: str) -> frozenset[str]:
    """The roles a member of ``role`` may invite as, assign and remove."""
    return MANAGEABLE_ROLES.get(role, frozenset())


def _locked_actor(tenant: Tenant, actor: User) -> tuple[Tenant, Membership]:
    """Lock the tenant row (serialising every membership change of the tenant, so two
    concurrent changes cannot both pass the last-owner check) and the actor's membership."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    membership = Membership.objects.for_tenant(tenant).filter(user=actor).first()
    if membership is None:
        raise NotFound("No such tenant.")
    return tenant, membership


def _target(tenant: Tenant, membership_id: int | str) -> Membership:
    try:
        return Membership.objects.for_tenant(tenant).select_related("user").get(pk=membership_id)
    except (Membership.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("No such member.") from exc


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise InvalidRequest(f"Unknown role {role!r}.", errors=_field("role"))


def _require_manage(actor: Membership, role: str) -> None:
    if role not in manageable_roles(actor.role):
        raise Forbidden(f"As {actor.role} you cannot manage {role}s.")


def _owners(tenant: Tenant) -> int:
    return Membership.objects.for_tenant(tenant).filter(role=Role.OWNER).count()


LAST_OWNER = "A tenant needs an owner: make someone else owner first."


@dataclass(frozen=True)
class InvitationCreated:
    invitation: Invitation
    token: str  # the link's secret: sent once by email, only its hash is stored


@transaction.atomic
def invitation_create(*, tenant: Tenant, actor: User, email: str, role: str) -> InvitationCreated:
    """Invite ``email`` to ``tenant`` as ``role``, within the actor's authority (owners any
    role, admins developers and viewers: else Forbidden). A pending invitation of the same
    address is replaced; an address that is a member already is a Conflict."""
    tenant, inviter = _locked_actor(tenant, actor)
    _check_role(role)
    _require_manage(inviter, role)
    email = email.strip().lower()
    if Membership.objects.for_tenant(tenant).filter(user__email=email).exists():
        raise Conflict(f"{email} is a member already.", errors=_field("email", "A member."))
    # Replace a pending invitation of the address; a revoked one stays, so that its link keeps
    # explaining why it no longer works instead of becoming an unknown one.
    Invitation.objects.for_tenant(tenant).filter(
        email=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).delete()
    token = secrets.token_urlsafe(32)
    invitation = Invitation.all_tenants.create(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=invitation_token_hash(token),
        invited_by=actor,
        expires_at=timezone.now() + timedelta(seconds=settings.INVITATION_TTL_SECONDS),
    )
    audit(
        tenant=tenant,
        actor=_actor(actor),
        action="member.invite",
        target_type="invitation",
        target_id=str(invitation.id),
        data={"email": email, "role": role},
    )
    return InvitationCreated(invitation=invitation, token=token)


@transaction.atomic
def invitation_revoke(*, tenant: Tenant, actor: User, invitation_id: uuid.UUID | str) -> Invitation:
    """Withdraw a pending invitation of ``tenant``: its link then says it is no longer valid
    and neither accepting it nor signing up through it works.

    Another tenant's invitation (or a malformed id) is NotFound, before any role check; the
    actor must be able to invite as the invitation's role (owners any role, admins developers
    and viewers: else Forbidden). A used or expired invitation is a Conflict. Revoking twice
    is harmless and audited once (``member.invite_revoke``)."""
    tenant, manager = _locked_actor(tenant, actor)
    try:
        invitation = Invitation.objects.for_tenant(tenant).select_for_update().get(pk=invitation_id)
    except (Invitation.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFound("No such invitation.") from exc
    _require_manage(manager, invitation.role)
    if invitation.revoked_at is not None:
        return invitation
    if invitation.accepted_at is not None:
        raise Conflict("This invitation has been used already.")
    if invitation.expires_at <= timezone.now():
        raise Conflict("This invitation has expired already.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(
        tenant=tenant,
        actor=_actor(actor),
        action="member.invite_revoke",
        target_type="invitation",
        target_id=str(invitation.id),
        data={"email": invitation.email, "role": invitation.role},
    )
    return invitation


INVITATION_REVOKED = "This invitation was revoked and is no longer valid: ask for a new one."


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """Join the tenant of an invitation with its role. The invitation must be for the user's
    address (else Forbidden), unused, not revoked and unexpired (else Conflict); an unknown
    token is NotFound. Accepting also confirms the address (the link came to it)."""
    invitation = (
        Invitation.all_tenants.select_for_update()
        .select_related("tenant")
        .filter(token_hash=invitation_token_hash(token))
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation.")
    return _accept(invitation, user)


@transaction.atomic
def invitation_accept_own(*, invitation_id: str, user: User) -> Membership:
    """Accept one of the invitations of the user's own address, by id (from the list of
    their invitations); another address's invitation is NotFound. Errors as
    :func:`invitation_accept`."""
    try:
        invitation = (
            Invitation.all_tenants.select_for_update()
            .select_related("tenant")
            .get(pk=invitation_id, email=user.email)
        )
    except (Invitation.DoesNotExist, ValueError, ValidationError) as exc:
        raise NotFound("No such invitation.") from exc
    return _accept(invitation, user)


def _accept(invitation: Invitation, user: User) -> Membership:
    if invitation.accepted_at is not None:
        raise Conflict("This invitation has been used already.")
    if invitation.revoked_at is not None:
        raise Conflict(INVITATION_REVOKED)
    if invitation.expires_at <= timezone.now():
        raise Conflict("This invitation has expired: ask for a new one.")
    if invitation.email != user.email:
        raise Forbidden(
            f"This invitation is for {invitation.email}; you are signed in as {user.email}."
        )
    tenant = Tenant.objects.select_for_update().get(pk=invitation.tenant_id)
    if Membership.objects.for_tenant(tenant).filter(user=user).exists():
        raise Conflict(f"You are a member of {tenant.name} already.")
    membership = Membership.all_tenants.create(tenant=tenant, user=user, role=invitation.role)
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit(
        tenant=tenant,
        actor=_actor(user),
        action="member.accept",
        target_type="membership",
        target_id=str(membership.pk),
        data={"email": user.email, "role": invitation.role},
    )
    _mark_verified(user)
    return membership


@transaction.atomic
def account_signup_invited(*, token: str, password: str) -> Membership:
    """A new account for the address of a pending invitation, which it accepts (the link
    proves the address, so no verification follows). Errors as :func:`invitation_accept`;
    an address with an account already is a Conflict. A refused invitation (used, revoked,
    expired) makes no account: the refusal rolls the new user back with it."""
    invitation = Invitation.all_tenants.filter(token_hash=invitation_token_hash(token)).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.revoked_at is not None:
        raise Conflict(INVITATION_REVOKED)
    if User.objects.filter(email=invitation.email).exists():
        raise Conflict("An account with this email address exists: sign in to accept.")
    user = User.objects.create_user(invitation.email, password)
    return invitation_accept(token=token, user=user)


@transaction.atomic
def membership_role_change(
    *, tenant: Tenant, actor: User, membership_id: int | str, role: str
) -> Membership:
    """Give a member another role. The actor must manage both the member's role and the new
    one (Forbidden); the last owner cannot be demoted (Conflict); another tenant's member is
    NotFound."""
    tenant, manager = _locked_actor(tenant, actor)
    target = _target(tenant, membership_id)
    _check_role(role)
    _require_manage(manager, target.role)
    _require_manage(manager, role)
    if target.role == role:
        return target
    if target.role == Role.OWNER and _owners(tenant) == 1:
        raise Conflict(LAST_OWNER)
    previous = target.role
    target.role = role
    target.save(update_fields=["role"])
    audit(
        tenant=tenant,
        actor=_actor(actor),
        action="member.role",
        target_type="membership",
        target_id=str(target.pk),
        data={"email": target.user.email, "from": previous, "to": role},
    )
    return target


@transaction.atomic
def membership_remove(*, tenant: Tenant, actor: User, membership_id: int | str) -> None:
    """Take a member out of the tenant, within the actor's authority (Forbidden); the last
    owner stays (Conflict); another tenant's member is NotFound."""
    tenant, manager = _locked_actor(tenant, actor)
    target = _target(tenant, membership_id)
    _require_manage(manager, target.role)
    if target.role == Role.OWNER and _owners(tenant) == 1:
        raise Conflict(LAST_OWNER)
    audit(
        tenant=tenant,
        actor=_actor(actor),
        action="member.remove",
        target_type="membership",
        target_id=str(target.pk),
        data={"email": target.user.email, "role": target.role},
    )
    target.delete()


@transaction.atomic
def membership_leave(*, tenant: Tenant, user: User) -> None:
    """Leave a tenant (any role); the last owner cannot (Conflict)."""
    tenant, membership = _locked_actor(tenant, user)
    if membership.role == Role.OWNER and _owners(tenant) == 1:
        raise Conflict(LAST_OWNER)
    audit(
        tenant=tenant,
        actor=_actor(user),
        action="member.leave",
        target_type="membership",
        target_id=str(membership.pk),
        data={"email": user.email, "role": membership.role},
    )
    membership.delete()


#: How many backup codes a person gets when two-factor sign-in is turned on or the codes are
#: made anew. Each signs in once, in place of an authenticator code.
BACKUP_CODE_COUNT = 10
BACKUP_DEVICE_NAME = "Backup codes"


@transaction.atomic
def totp_start(*, user: User) -> TOTPDevice:
    """A new, unconfirmed authenticator for ``user`` (replacing an unconfirmed one): it is
    not asked for at sign-in until :func:`totp_confirm` proves the app has its secret."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


@dataclass(frozen=True)
class TwoFactorOn:
    device: TOTPDevice
    backup_codes: list[str]  # shown once; django-otp keeps them to compare, as it does the secret


def _wait_seconds(until: datetime | None) -> int:
    """Whole seconds from now until ``until``, rounded up, at least 1."""
    if until is None:
        return 1
    return max(1, math.ceil((until - timezone.now()).total_seconds()))


def _backup_codes_replace(user: User) -> list[str]:
    """A new set of BACKUP_CODE_COUNT codes for ``user``; every older code stops working."""
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=BACKUP_DEVICE_NAME, confirmed=True)
    codes: set[str] = set()
    while len(codes) < BACKUP_CODE_COUNT:
        codes.add(StaticToken.random_token())  # 8 base32 characters: 40 random bits
    ordered = sorted(codes)
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in ordered)
    return ordered


def totp_confirm(*, user: User, code: str) -> TwoFactorOn:
    """Turn on two-factor sign-in with the code the app shows for the pending device, and
    give the person BACKUP_CODE_COUNT new backup codes (any older ones stop working). A wrong
    code (or no pending device) is InvalidRequest and changes nothing but django-otp's
    back-off; a code sent while that back-off lasts is RateLimited, unchecked."""
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).first()
        if device is None:
            raise InvalidRequest("Start again: there is no authenticator to confirm.")
        allowed, why = device.verify_is_allowed()
        if not allowed:
            wait = _wait_seconds((why or {}).get("locked_until"))
            raise RateLimited(
                f"Too many wrong codes: wait {wait} seconds, then enter the code the app shows.",
                retry_after=wait,
            )
        if device.verify_token(code.strip()):
            TOTPDevice.objects.filter(user=user, confirmed=True).delete()
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            codes = _backup_codes_replace(user)
            _audit_account(
                user=user, action="account.totp_enable", data={"backup_codes": len(codes)}
            )
            return TwoFactorOn(device=device, backup_codes=codes)
    # Refused only once the block has committed the failure django-otp counted: raising inside
    # it would roll the count back, and with it the back-off.
    raise InvalidRequest("That code is not right.", errors=_field("code", "Wrong code."))


@transaction.atomic
def backup_codes_regenerate(*, user: User) -> list[str]:
    """BACKUP_CODE_COUNT new backup codes for a person with two-factor sign-in on; the old
    ones, used or not, stop working. With two-factor off it is InvalidRequest (and nothing is
    made: backup codes stand in for an authenticator, never for a missing one)."""
    if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise InvalidRequest("Turn on two-factor sign-in first.")
    codes = _backup_codes_replace(user)
    _audit_account(
        user=user, action="account.backup_codes_regenerate", data={"backup_codes": len(codes)}
    )
    return codes


@transaction.atomic
def totp_disable(*, user: User) -> bool:
    """Turn two-factor sign-in off: every authenticator and every backup code of the user
    goes. False (and no audit) if it was off already."""
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()
    if deleted:
        _audit_account(user=user, action="account.totp_disable")
    return bool(deleted)


@dataclass(frozen=True)
class CodeCheck:
    """What a sign-in code proved. ``device`` accepted it (None: refused). ``retry_at`` is
    set when it was refused unchecked because earlier wrong codes made the step back off;
    ``backup_codes_left`` when it was a backup code (which is gone now)."""

    device: Device | None
    retry_at: datetime | None = None
    backup_codes_left: int | None = None

    @property
    def retry_seconds(self) -> int:
        """Whole seconds until the back-off ends (at least 1)."""
        return _wait_seconds(self.retry_at)


@transaction.atomic
def two_factor_verify(*, user: User, code: str) -> CodeCheck:
    """Check the second step of a sign-in: the authenticator's current code, or one of the
    user's backup codes (case, spaces and dashes do not matter). A backup code works once:
    it is deleted when it signs in, and the use is audited (``account.backup_code_use``).

    Wrong codes back off the whole step with django-otp's throttling (1, 2, 4, ... seconds,
    OTP_TOTP_THROTTLE_FACTOR): the authenticator's counter counts every wrong code, of either
    kind, so switching kinds buys nothing, and while any of the user's devices backs off every
    code is refused unchecked (``retry_at``), the right one too. The counters live on the
    devices, not in a session: starting the sign-in again does not reset them. A right code
    resets them. A user without a confirmed authenticator is refused."""
    totp = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if totp is None:
        return CodeCheck(device=None)
    backup = StaticDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    devices: list[Device] = [totp] if backup is None else [totp, backup]
    waits = []
    for device in devices:
        allowed, why = device.verify_is_allowed()
        if not allowed:
            waits.append((why or {}).get("locked_until") or timezone.now())
    if waits:
        return CodeCheck(device=None, retry_at=max(waits))
    token = re.sub(r"[\s-]", "", code).lower()
    if token.isdigit() and len(token) == totp.digits:
        if not totp.verify_token(token):  # counts the failure itself
            return CodeCheck(device=None)
        if backup is not None and backup.throttling_failure_count:
            backup.throttle_reset()
        return CodeCheck(device=totp)
    if backup is None or not backup.verify_token(token):
        totp.throttle_increment()
        return CodeCheck(device=None)
    totp.throttle_reset()
    left = backup.token_set.count()
    _audit_account(user=user, action="account.backup_code_use", data={"backup_codes_left": left})
    return CodeCheck(device=backup, backup_codes_left=left)


def account_password_changed(*, user: User, reset: bool) -> None:
    """Record a new password (changed while signed in, or set from a reset link) in the
    trail of each of the person's tenants; Django's own views store the password."""
    _audit_account(
        user=user, action="account.password_reset" if reset else "account.password_change"
    )


# --- operators: what the admin changes (suspend, resume, tenant fields, plans, memberships) -----


def _push_tenant_on_commit(tenant: Tenant) -> None:
    doc = tenant_document(tenant)
    transaction.on_commit(lambda: tenant_cache.push(str(tenant.id), doc))


def _tenant_active_set(*, tenant: Tenant, actor: str, active: bool, reason: str) -> Tenant:
    locked = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
    if locked.is_active == active:
        return locked
    locked.is_active = active
    locked.save(update_fields=["is_active"])
    audit(
        tenant=locked,
        actor=actor,
        action="tenant.resume" if active else "tenant.suspend",
        target_type="tenant",
        target_id=str(locked.id),
        data={"reason": reason} if reason else {},
    )
    _push_tenant_on_commit(locked)
    return locked


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, actor: str, reason: str = "") -> Tenant:
    """Suspend ``tenant``: from the commit on, every data-plane request with one of its keys
    is refused (401, "tenant is not active"): the tenant's hot-cache document is pushed at the
    commit, so this process sees it at once and every other one within HOT_CACHE_TTL_SECONDS.
    Its console turns read-only. Nothing is deleted. Audited as ``tenant.suspend``;
    suspending a suspended tenant changes nothing and is not audited."""
    return _tenant_active_set(tenant=tenant, actor=actor, active=False, reason=reason)


@transaction.atomic
def tenant_resume(*, tenant: Tenant, actor: str, reason: str = "") -> Tenant:
    """Undo :func:`tenant_suspend` (same reach and timing). Audited as ``tenant.resume``;
    resuming an active tenant changes nothing and is not audited."""
    return _tenant_active_set(tenant=tenant, actor=actor, active=True, reason=reason)


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor: str, name: str, plan: Plan) -> Tenant:
    """An operator's change of a tenant's name or plan. A new plan holds on the data plane
    from the commit on (the hot-cache document is pushed). Audited as ``tenant.update`` with
    ``before`` and ``after`` of the fields that changed; no change, no audit. An empty name is
    InvalidRequest."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("A tenant needs a name of 1 to 100 characters.", errors=_field("name"))
    locked = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if locked.name != name:
        before["name"], after["name"] = locked.name, name
        locked.name = name
    if locked.plan_id != plan.pk:
        before["plan"], after["plan"] = locked.plan.slug, plan.slug
        locked.plan = plan
    if not after:
        return locked
    locked.save(update_fields=list(after))
    audit(
        tenant=locked,
        actor=actor,
        action="tenant.update",
        target_type="tenant",
        target_id=str(locked.id),
        data={"before": before, "after": after},
    )
    _push_tenant_on_commit(locked)
    return locked


@transaction.atomic
def plan_save(*, plan: Plan, actor: str, changed: list[str]) -> Plan:
    """Store an operator's new or edited ``plan`` (``changed``: the fields the operator
    changed). Every tenant on an edited plan gets a ``plan.update`` audit event naming the
    plan and the new values (a tenant's trail explains every change of its limits and
    prices), and its hot-cache document is pushed at the commit, so the new limits hold on the
    data plane at once. A plan nobody is on yet leaves no tenant event."""
    plan.save()
    if not changed:
        return plan
    values = {field: getattr(plan, field) for field in sorted(changed)}
    tenants = list(Tenant.objects.select_related("plan").filter(plan=plan))
    AuditEvent.all_tenants.bulk_create(
        AuditEvent(
            tenant=tenant,
            actor=actor,
            action="plan.update",
            target_type="plan",
            target_id=plan.slug,
            data={"changed": values},
        )
        for tenant in tenants
    )
    docs = [(str(tenant.id), tenant_document(tenant)) for tenant in tenants]

    def push() -> None:
        for ident, doc in docs:
            tenant_cache.push(ident, doc)

    transaction.on_commit(push)
    return plan


@transaction.atomic
def membership_set(*, tenant: Tenant, user: User, role: str, actor: str) -> Membership:
    """An operator makes ``user`` a member of ``tenant`` with ``role``, or gives an existing
    member that role (``member.add`` or ``member.role``, audited; no change, no audit). The
    last owner is not demoted (Conflict); an unknown role is InvalidRequest."""
    _check_role(role)
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    membership = Membership.objects.for_tenant(tenant).filter(user=user).first()
    if membership is None:
        membership = Membership.all_tenants.create(tenant=tenant, user=user, role=role)
        audit(
            tenant=tenant,
            actor=actor,
            action="member.add",
            target_type="membership",
            target_id=str(membership.pk),
            data={"email": user.email, "role": role},
        )
        return membership
    if membership.role == role:
        return membership
    if membership.role == Role.OWNER and _owners(tenant) == 1:
        raise Conflict(LAST_OWNER)
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(
        tenant=tenant,
        actor=actor,
        action="member.role",
        target_type="membership",
        target_id=str(membership.pk),
        data={"email": user.email, "from": previous, "to": role},
    )
    return membership


@transaction.atomic
def membership_delete(*, tenant: Tenant, membership_id: int | str, actor: str) -> None:
    """An operator takes a member out of ``tenant`` (``member.remove``, audited). The last
    owner stays (Conflict); another tenant's membership is NotFound."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    target = _target(tenant, membership_id)
    if target.role == Role.OWNER and _owners(tenant) == 1:
        raise Conflict(LAST_OWNER)
    audit(
        tenant=tenant,
        actor=actor,
        action="member.remove",
        target_type="membership",
        target_id=str(target.pk),
        data={"email": target.user.email, "role": target.role},
    )
    target.delete()


#: The fields of a person an operator's change of them audits (the password has its own).
OPERATOR_AUDITED_USER_FIELDS = ("email", "name", "is_active", "is_staff", "is_superuser")


def account_operator_change(*, user: User, actor: str, changed: dict[str, Any]) -> None:
    """Record an operator's change of a person (``changed``: field → new value, of
    OPERATOR_AUDITED_USER_FIELDS) as ``account.operator_change`` in the trail of each of the
    person's tenants; call it in the transaction that saved the user."""
    data = {name: changed[name] for name in OPERATOR_AUDITED_USER_FIELDS if name in changed}
    for membership in Membership.all_tenants.filter(user=user).select_related("tenant"):
        audit(
            tenant=membership.tenant,
            actor=actor,
            action="account.operator_change",
            target_type="user",
            target_id=str(user.pk),
            data=data,
        )
