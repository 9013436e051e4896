"""Writes for tenants, people and API keys. Each service is one transaction that also writes
its audit record, and pushes the new state to the hot cache only once it has committed."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from kernel.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from kernel.redis_client import get_redis
from kernel.redis_keys import (
    is_usage_month_field,
    parse_usage_field,
    usage_key,
    usage_month_field,
)
from tenants.authority import Authority, check_grant
from tenants.models import (
    ALL_SCOPES,
    ApiKey,
    AuditEvent,
    Membership,
    Plan,
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
) -> KeyCreated:
    """Issue an API key. The returned ``secret`` is the only copy of the token.

    ``authority`` is the caller's (tenants.authority): the new key must be within it, or this
    raises Forbidden and stores nothing. It has no default, so no caller is unlimited by
    forgetting it: operator code (manage.py commands, the demo) passes
    ``tenants.authority.OPERATOR``."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("A key needs a name of 1 to 100 characters.", errors=_field("name"))
    clean_scopes = _clean_scopes(scopes)
    clean_resources = _clean_resources(resources or [])
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("expires_at must be in the future.", errors=_field("expires_at"))
    check_grant(authority, scopes=clean_scopes, resources=clean_resources, expires_at=expires_at)
    # Lock the tenant row so two concurrent creations cannot both pass the quota check.
    tenant = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
    live = ApiKey.objects.for_tenant(tenant).filter(revoked_at__isnull=True).count()
    if live >= tenant.plan.max_api_keys:
        raise QuotaExceeded(f"The plan allows {tenant.plan.max_api_keys} active API keys.")
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
        data={"name": name, "scopes": clean_scopes, "resources": clean_resources},
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


def _parse_usage(raw: dict[bytes, bytes]) -> dict[int, dict[str, int]]:
    """The hourly totals in a tenant's counter hash: {hour epoch: {column: count}}.

    Fields are ``<hour epoch>:<counter>`` (hourly traffic) and ``m<YYYYMM>:p`` (the month's
    published count, read by the publish script's quota check: not an hour, not rolled up)."""
    hours: dict[int, dict[str, int]] = {}
    for field, value in raw.items():
        parsed = parse_usage_field(field.decode())
        if parsed is not None:
            hour, column = parsed
            hours.setdefault(hour, {})[column] = int(value)
    return hours


def usage_rollup(*, now: datetime | None = None, chunk: int = 500) -> int:
    """Copy the data plane's per-hour counters (Redis hash per tenant, written by the Lua
    scripts) into UsageRecord. The counters are totals per hour, so a row is overwritten,
    never added to: running twice is harmless. Hourly fields older than USAGE_KEEP_HOURS are
    then dropped from Redis (their rows are final), and monthly quota counters older than the
    previous month too. Returns the number of rows written."""
    redis = get_redis()
    moment = now or timezone.now()
    current_hour = int(moment.timestamp()) // 3600
    previous = moment.replace(day=1) - timedelta(days=1)
    keep_months = {
        usage_month_field(moment.year, moment.month),
        usage_month_field(previous.year, previous.month),
    }
    tenant_ids = list(Tenant.objects.filter(is_active=True).values_list("id", flat=True))
    written = 0
    for start in range(0, len(tenant_ids), chunk):
        batch = tenant_ids[start : start + chunk]
        pipe = redis.pipeline(transaction=False)
        for tenant_id in batch:
            pipe.hgetall(usage_key(str(tenant_id)))
        for tenant_id, raw in zip(batch, pipe.execute(), strict=True):
            hours = _parse_usage(raw)
            for hour, counts in hours.items():
                UsageRecord.all_tenants.update_or_create(
                    tenant_id=tenant_id,
                    hour=datetime.fromtimestamp(hour * 3600, tz=UTC),
                    defaults=counts,
                )
                written += 1
            old = [
                field
                for field in raw
                if _is_stale(field.decode(), current_hour - USAGE_KEEP_HOURS, keep_months)
            ]
            if old:
                redis.hdel(usage_key(str(tenant_id)), *old)
    return written


def _is_stale(field: str, oldest_hour: int, keep_months: set[str]) -> bool:
    hourly = parse_usage_field(field)
    if hourly is not None:
        return hourly[0] < oldest_hour
    return is_usage_month_field(field) and field not in keep_months
