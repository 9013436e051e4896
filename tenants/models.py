"""Tenants, their people, plans and API keys, and the audit trail.

Tenant-owned rows use :class:`TenantManager` as their default manager: it fails closed, so
a query that forgot to name its tenant raises instead of reading every tenant's rows.
Operator code that really means "all tenants" says so with ``Model.all_tenants``.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone


class TenantScopeError(RuntimeError):
    """A tenant-owned model was queried without naming its tenant."""


_M = TypeVar("_M", bound=models.Model)


class TenantManager(models.Manager[_M]):
    """The default manager of tenant-owned models: every query must start with for_tenant()."""

    def get_queryset(self) -> models.QuerySet[_M]:
        raise TenantScopeError(
            f"{self.model.__name__} is tenant-owned: use "
            f"{self.model.__name__}.objects.for_tenant(tenant) (or .all_tenants for operators)."
        )

    def for_tenant(self, tenant: Tenant | uuid.UUID | str) -> models.QuerySet[_M]:
        """This tenant's rows only (``tenant`` may be the tenant's id as text, as the hot
        cache and the API key's principal carry it)."""
        tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
        return super().get_queryset().filter(tenant_id=tenant_id)


class Plan(models.Model):
    """What a tenant may use. Operators edit plans in the admin; tenants see theirs."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    max_message_bytes = models.PositiveIntegerField(default=256 * 1024)
    max_queues = models.PositiveIntegerField(default=1000)
    max_topics = models.PositiveIntegerField(default=1000)
    max_subscriptions = models.PositiveIntegerField(default=1000)
    max_api_keys = models.PositiveIntegerField(default=100)
    monthly_messages = models.BigIntegerField(
        null=True, blank=True, help_text="Messages per calendar month; empty means unlimited."
    )
    publish_rate_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Published messages per second; empty means unlimited."
    )
    consume_rate_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pulled messages per second; empty means unlimited."
    )
    request_rate_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Data-plane requests (publish, pull, ack, ...) per second; empty: unlimited.",
    )
    max_backlog_messages = models.BigIntegerField(
        null=True, blank=True, help_text="Messages stored per queue or topic; empty: unlimited."
    )
    max_backlog_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Bytes stored per queue or topic; empty: unlimited."
    )
    max_retention_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=14 * 86400,
        help_text="Longest retention of a queue or topic; empty: the platform's own limit.",
    )

    # Prices, in integer minor units of ``currency`` (cents for EUR): never floats.
    currency = models.CharField(max_length=3, default="EUR", help_text="ISO 4217 code.")
    base_fee_minor = models.PositiveBigIntegerField(default=0, help_text="Per month.")
    included_requests = models.PositiveBigIntegerField(
        default=0, help_text="Data-plane requests a month included in the base fee."
    )
    price_per_million_requests_minor = models.PositiveBigIntegerField(
        default=0, help_text="Per million requests beyond the included ones."
    )
    included_gib = models.PositiveIntegerField(
        default=0, help_text="GiB of traffic (in and out) a month included in the base fee."
    )
    price_per_gib_minor = models.PositiveBigIntegerField(
        default=0, help_text="Per GiB of traffic beyond the included GiB."
    )

    def __str__(self) -> str:
        return self.name

    def quotas(self) -> dict[str, Any]:
        """The plan's value of every quota (tenants.quotas.QUOTAS); None: unlimited."""
        from tenants.quotas import QUOTAS

        return {quota.name: getattr(self, quota.name) for quota in QUOTAS}


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=64, unique=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    quota_overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text="Quotas set by an operator for this tenant, replacing the plan's: "
        '{"<quota>": <number> or null for unlimited} (see tenants/quotas.py).',
    )

    def __str__(self) -> str:
        return self.slug


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person: logs in to the console with an email address."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May use the operators' admin.")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.tenant}"


class Scope(models.TextChoices):
    PUBLISH = "publish"
    CONSUME = "consume"
    MANAGE = "manage"


ALL_SCOPES = [Scope.PUBLISH.value, Scope.CONSUME.value, Scope.MANAGE.value]


class ApiKey(models.Model):
    """A credential ``op_<prefix>_<secret>``: the prefix finds the row, only a hash of the
    secret is kept, so a database leak reveals no usable key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 of the secret, hex.")
    scopes = ArrayField(models.CharField(max_length=16, choices=Scope.choices))
    resources = ArrayField(
        models.CharField(max_length=200),
        default=list,
        blank=True,
        help_text='Patterns like "queue:orders" or "topic:events.*"; empty means all.',
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)
    # The key's own limits, narrowing the tenant's (None: the tenant's hold).
    publish_rate_per_second = models.PositiveIntegerField(null=True, blank=True)
    consume_rate_per_second = models.PositiveIntegerField(null=True, blank=True)
    monthly_messages = models.BigIntegerField(null=True, blank=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} (op_{self.prefix}_…)"


class AuditEvent(models.Model):
    """Who changed what, written in the same transaction as the change."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.CharField(max_length=200, help_text='"user:<email>", "key:<prefix>", ...')
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=200)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.target_type}:{self.target_id}"


class UsageRecord(models.Model):
    """Traffic in one hour, rolled up from the counters the data plane keeps in Redis: the
    tenant's total (``key_prefix`` and ``resource`` empty), one API key's (``key_prefix``),
    or one queue's, topic's or subscription's (``resource`` "<kind>:<name>"). Kept 13 months."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records")
    hour = models.DateTimeField()
    key_prefix = models.CharField(max_length=16, blank=True, default="")
    resource = models.CharField(max_length=200, blank=True, default="")
    published = models.BigIntegerField(default=0)
    published_bytes = models.BigIntegerField(default=0)
    delivered = models.BigIntegerField(default=0)
    delivered_bytes = models.BigIntegerField(default=0)
    acked = models.BigIntegerField(default=0)
    dead_lettered = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "hour", "key_prefix", "resource"], name="usage_unique_hour"
            )
        ]
        indexes = [models.Index(fields=["hour"], name="usage_by_hour")]

    def __str__(self) -> str:
        scope = self.resource or (f"key {self.key_prefix}" if self.key_prefix else "total")
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}:00 {scope}"


class QuotaAlert(models.Model):
    """An email sent because a monthly quota reached a share of its limit in one period;
    the unique row is what makes it go out once per period."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quota_alerts")
    quota = models.CharField(max_length=64)
    period = models.CharField(max_length=7, help_text="The month, YYYY-MM.")
    percent = models.PositiveSmallIntegerField(help_text="80 or 100.")
    sent_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "quota", "period", "percent"], name="quota_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.quota} {self.period} {self.percent}%"


class Invitation(models.Model):
    """An offer to join a tenant with a role, sent by email. Only a hash of the link's token
    is kept; the link works once, until ``expires_at``, unless an owner or admin revokes it
    first (``revoked_at``: the row stays, so the link can say why it no longer works)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token.")
    invited_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()
    all_tenants = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["email", "accepted_at"])]

    def __str__(self) -> str:
        return f"{self.email} as {self.role} of {self.tenant_id}"

    @property
    def is_pending(self) -> bool:
        """Whether the link can still be accepted: not used, not revoked, not expired."""
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class AccountVerification(models.Model):
    """The email check of a self-service sign-up. A user without this row (made by an
    operator, or who joined from an invitation link) counts as verified. The tenant made at
    sign-up (``pending_tenant``) stays suspended until the address is confirmed."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="verification")
    pending_tenant = models.ForeignKey(
        Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    signup_address = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_sent_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["signup_address", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user_id} verified={self.verified_at is not None}"
