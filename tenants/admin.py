"""The operators' admin (``/admin/``, staff only) for tenants, plans, people, keys, usage and
the audit trail.

Every change an operator makes here goes through a service of :mod:`tenants.services`, so it
writes its audit event (actor ``operator:<email>``) in the transaction of the change and
pushes the new state to the hot cache when it commits: a suspension, a plan or an override
holds on the data plane at once. Django's own LogEntry is kept as well. Rows whose removal
needs more than a DELETE (a tenant's Redis structures, a key's cached copy, the audit trail)
cannot be deleted here; keys are revoked, tenants suspended.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Model, QuerySet
from django.forms.models import construct_instance
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join

from kernel.errors import PlatformError
from tenants import services
from tenants.admin_dashboard import dashboard_context
from tenants.authority import OPERATOR
from tenants.models import (
    ApiKey,
    AuditEvent,
    Membership,
    Plan,
    Role,
    Tenant,
    UsageRecord,
    User,
)
from tenants.quotas import QUOTAS, effective_quotas, validate_overrides

admin.site.site_header = "OpenPlatform operators"
admin.site.site_title = "OpenPlatform operators"
admin.site.index_title = "Operations"

PRICE_FIELDS = (
    "base_fee_minor",
    "price_per_million_requests_minor",
    "price_per_gib_minor",
)


def operator(request: HttpRequest) -> str:
    """The audit actor of the signed-in operator."""
    return f"operator:{getattr(request.user, 'email', '')}"


class ServiceErrorsMixin:
    """A service's refusal (a PlatformError, e.g. the last owner's demotion) becomes an error
    message on the page it came from; the admin's transaction has rolled the change back."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            response: HttpResponse = super().changeform_view(  # type: ignore[misc]
                request, object_id, form_url, extra_context
            )
            return response
        except PlatformError as exc:
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            response: HttpResponse = super().delete_view(  # type: ignore[misc]
                request, object_id, extra_context
            )
            return response
        except PlatformError as exc:
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.get_full_path())


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows operators look at but never add, change or delete here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --- tenants -----------------------------------------------------------------------------------


def _quota_field(name: str) -> str:
    return f"quota_{name}"


def _unlimited_field(name: str) -> str:
    return f"quota_{name}_unlimited"


def _quota_fields() -> dict[str, forms.Field]:
    fields: dict[str, forms.Field] = {}
    for quota in QUOTAS:
        fields[_quota_field(quota.name)] = forms.IntegerField(
            label=f"{quota.label} ({quota.unit})", required=False, min_value=0
        )
        fields[_unlimited_field(quota.name)] = forms.BooleanField(
            label=f"{quota.label}: unlimited", required=False
        )
    return fields


#: One optional number and one "unlimited" box per quota of tenants.quotas.QUOTAS, declared
#: on a base class because the admin only accepts fields a form class declares.
QuotaOverrideFields = type("QuotaOverrideFields", (forms.Form,), _quota_fields())


class TenantForm(QuotaOverrideFields, forms.ModelForm):  # type: ignore[misc,valid-type,type-arg]
    """The tenant's name, plan and state, and one optional field per quota: empty follows
    the plan, a number overrides it, "unlimited" lifts it for this tenant. On a new tenant
    the owner's email too (tenant_create makes or finds that user)."""

    owner_email = forms.EmailField(
        required=False, help_text="New tenants only: the owner (an account is made if needed)."
    )

    class Meta:
        model = Tenant
        fields = ("name", "slug", "plan", "is_active")
        labels = {"is_active": "Active (clear to suspend: its keys are refused at once)"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adding = self.instance._state.adding
        overrides = {} if adding else (self.instance.quota_overrides or {})
        plan = None if adding else self.instance.plan
        for quota in QUOTAS:
            number = self.fields.get(_quota_field(quota.name))
            unlimited = self.fields.get(_unlimited_field(quota.name))
            if number is None or unlimited is None:
                continue
            if plan is None:
                number.help_text = "Empty: the plan's value."
            else:
                value = getattr(plan, quota.name)
                number.help_text = f"Empty: the plan's {'unlimited' if value is None else value}."
            number.initial = overrides.get(quota.name)
            unlimited.initial = quota.name in overrides and overrides[quota.name] is None

    def clean_owner_email(self) -> str:
        email: str = self.cleaned_data.get("owner_email") or ""
        if self.instance._state.adding and not email:
            raise forms.ValidationError("A new tenant needs an owner.")
        return email.strip().lower()

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        overrides: dict[str, int | None] = {}
        for quota in QUOTAS:
            value = cleaned.get(_quota_field(quota.name))
            unlimited = cleaned.get(_unlimited_field(quota.name))
            if unlimited and value is not None:
                self.add_error(
                    _quota_field(quota.name), "Give a number or tick unlimited, not both."
                )
            elif unlimited:
                overrides[quota.name] = None
            elif value is not None:
                overrides[quota.name] = value
        try:
            cleaned["quota_overrides"] = validate_overrides(overrides)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


class TenantAdmin(ServiceErrorsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    form = TenantForm
    list_display = ("name", "slug", "plan", "is_active", "created_at")
    list_filter = ("is_active", "plan", "created_at")
    search_fields = ("name", "slug", "id")
    ordering = ("name",)
    list_select_related = ("plan",)
    actions = ("suspend", "resume")
    readonly_fields = ("id", "created_at", "effective_quotas_table")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        quota_fields = [
            field for q in QUOTAS for field in (_quota_field(q.name), _unlimited_field(q.name))
        ]
        first: tuple[str, ...] = ("name", "slug", "plan", "is_active")
        if obj is None:
            first = ("name", "slug", "plan", "owner_email")
        else:
            first = ("id", *first, "created_at")
        sets: list[Any] = [
            (None, {"fields": first}),
            (
                "Quota overrides",
                {
                    "fields": quota_fields,
                    "description": "Empty follows the plan; a number or unlimited replaces "
                    "the plan's value for this tenant only.",
                },
            ),
        ]
        if obj is not None:
            sets.append(("Effective quotas", {"fields": ("effective_quotas_table",)}))
        return sets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The slug names the tenant in its hot-cache document and URLs: fixed once made.
        return (*self.readonly_fields, "slug") if obj is not None else ()

    @admin.display(description="Effective quotas")
    def effective_quotas_table(self, obj: Tenant) -> str:
        rows = [
            (q.label, "unlimited" if e.value is None else e.value, q.unit, e.source)
            for q, e in ((q, effective_quotas(obj)[q.name]) for q in QUOTAS)
        ]
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><thead><tr><th>Quota</th><th>Value</th><th>Unit</th><th>From</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            body,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a tenant's queues live in Redis too: suspend it instead

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        actor = operator(request)
        data = form.cleaned_data
        if not change:
            created = services.tenant_create(
                name=data["name"],
                slug=data["slug"],
                owner_email=data["owner_email"],
                plan=data["plan"],
                actor=actor,
            ).tenant
            obj.id, obj.created_at = created.id, created.created_at
            obj._state.adding, obj._state.db = False, created._state.db
            tenant = created
        else:
            tenant = services.tenant_update(
                tenant=obj, actor=actor, name=data["name"], plan=data["plan"]
            )
        services.tenant_quotas_set(tenant=tenant, actor=actor, overrides=data["quota_overrides"])
        if data.get("is_active", True):
            services.tenant_resume(tenant=tenant, actor=actor)
        else:
            services.tenant_suspend(tenant=tenant, actor=actor)
        obj.refresh_from_db()

    @admin.action(description="Suspend the selected tenants (their keys are refused at once)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Resume the selected tenants")
    def resume(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[Tenant], active: bool) -> None:
        service = services.tenant_resume if active else services.tenant_suspend
        changed = 0
        with transaction.atomic():
            for tenant in queryset.order_by("slug"):
                if tenant.is_active != active:
                    service(tenant=tenant, actor=operator(request))
                    changed += 1
        verb = "resumed" if active else "suspended"
        self.message_user(request, f"{changed} tenant(s) {verb}.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name="operator_dashboard",
        )
        return [dashboard, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The operator dashboard: traffic, quotas, daily totals and revenue (a month may be
        chosen with ``?month=YYYY-MM``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            **dashboard_context(request.GET.get("month")),
            "title": "Operator dashboard",
        }
        return TemplateResponse(request, "admin/operator_dashboard.html", context)


# --- plans -------------------------------------------------------------------------------------


def _money(plan: Plan, field: str) -> str:
    return f"{getattr(plan, field)} {plan.currency} minor units"


class PlanAdmin(ServiceErrorsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "slug", "tenant_count", "monthly_messages", "base_fee", "currency")
    search_fields = ("name", "slug")
    ordering = ("name",)
    fieldsets = (
        (None, {"fields": ("slug", "name")}),
        ("Quotas (empty: unlimited)", {"fields": tuple(q.name for q in QUOTAS)}),
        (
            "Prices, in integer minor units of the currency (cents for EUR)",
            {
                "fields": (
                    "currency",
                    "base_fee_minor",
                    "included_requests",
                    "price_per_million_requests_minor",
                    "included_gib",
                    "price_per_gib_minor",
                )
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        plans: QuerySet[Plan] = super().get_queryset(request)
        return plans.annotate(tenants_on=Count("tenants"))

    @admin.display(description="Tenants", ordering="tenants_on")
    def tenant_count(self, obj: Any) -> int:
        return int(getattr(obj, "tenants_on", 0))

    @admin.display(description="Base fee", ordering="base_fee_minor")
    def base_fee(self, obj: Plan) -> str:
        return _money(obj, "base_fee_minor")

    def save_model(self, request: HttpRequest, obj: Plan, form: Any, change: bool) -> None:
        services.plan_save(
            plan=obj, actor=operator(request), changed=list(form.changed_data) if change else []
        )


# --- people ------------------------------------------------------------------------------------


class UserAddForm(AdminUserCreationForm):  # type: ignore[type-arg]
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email: str = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("A user with this email address exists.")
        return email


class UserEditForm(UserChangeForm):  # type: ignore[type-arg]
    class Meta:
        model = User
        fields = "__all__"


class UserAdmin(DjangoUserAdmin):  # type: ignore[type-arg]
    add_form = UserAddForm
    form = UserEditForm
    list_display = ("email", "name", "is_staff", "is_superuser", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("email", "password", "name")}),
        (
            "Access",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("date_joined", "last_login")}),
    )
    add_fieldsets = ((None, {"fields": ("email", "usable_password", "password1", "password2")}),)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a person could leave a tenant without its owner: deactivate

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audited = [f for f in form.changed_data if f in services.OPERATOR_AUDITED_USER_FIELDS]
        if change and audited:
            services.account_operator_change(
                user=obj,
                actor=operator(request),
                changed={field: getattr(obj, field) for field in audited},
            )


class MembershipForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Membership
        fields = ("tenant", "user", "role")

    def _post_clean(self) -> None:
        # Model.full_clean() checks the unique pair through Membership's default manager,
        # which fails closed without a tenant (TenantManager): clean() checks the pair, and
        # the form's fields carry the model fields' own validation.
        self.instance = construct_instance(self, self.instance, self._meta.fields)

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        tenant, user = cleaned.get("tenant"), cleaned.get("user")
        if (
            self.instance._state.adding
            and tenant is not None
            and user is not None
            and Membership.objects.for_tenant(tenant).filter(user=user).exists()
        ):
            raise forms.ValidationError(f"{user} is a member of {tenant} already.")
        instance = self.instance
        if (
            instance.pk
            and instance.role == Role.OWNER
            and cleaned.get("role") != Role.OWNER
            and Membership.objects.for_tenant(instance.tenant_id).filter(role=Role.OWNER).count()
            == 1
        ):
            raise forms.ValidationError(services.LAST_OWNER)
        return cleaned


class MembershipAdmin(ServiceErrorsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    form = MembershipForm
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
    search_fields = ("user__email", "tenant__slug", "tenant__name")
    list_select_related = ("user", "tenant")
    autocomplete_fields = ("tenant", "user")
    ordering = ("tenant__slug", "user__email")
    actions = None  # a bulk delete would skip the last-owner rule: one at a time

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return Membership.all_tenants.select_related("user", "tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("tenant", "user", "created_at") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        saved = services.membership_set(
            tenant=obj.tenant, user=obj.user, role=obj.role, actor=operator(request)
        )
        obj.pk, obj.created_at = saved.pk, saved.created_at
        obj._state.adding, obj._state.db = False, saved._state.db

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.membership_delete(tenant=obj.tenant, membership_id=obj.pk, actor=operator(request))


# --- keys --------------------------------------------------------------------------------------


class RevokedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "Not revoked"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Keys are minted by tenants (the secret is shown once, to them); operators look them up
    and revoke them. The secret's hash is never shown."""

    list_display = (
        "name",
        "token_prefix",
        "tenant",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (RevokedFilter, "tenant")
    search_fields = ("prefix", "name", "tenant__slug", "tenant__name")
    list_select_related = ("tenant",)
    ordering = ("-created_at",)
    actions = ("revoke",)
    fields = (
        "id",
        "tenant",
        "name",
        "prefix",
        "scopes",
        "resources",
        "publish_rate_per_second",
        "consume_rate_per_second",
        "monthly_messages",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return ApiKey.all_tenants.select_related("tenant")

    @admin.display(description="Token", ordering="prefix")
    def token_prefix(self, obj: ApiKey) -> str:
        return f"op_{obj.prefix}_…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the cached copy must learn of it

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change list (and its revoke action) for those who may change keys; a key's
        # page is read-only for everyone.
        return obj is None and super().has_change_permission(request)

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        with transaction.atomic():
            for key in queryset.filter(revoked_at__isnull=True).select_related("tenant"):
                services.key_revoke(
                    tenant=key.tenant,
                    key_id=str(key.id),
                    actor=operator(request),
                    authority=OPERATOR,
                )
                revoked += 1
        self.message_user(request, f"{revoked} key(s) revoked.", messages.SUCCESS)


# --- usage and audit ---------------------------------------------------------------------------


class UsageLevelFilter(admin.SimpleListFilter):
    title = "level"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("tenant", "Tenant totals"), ("key", "Per key"), ("resource", "Per resource")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "tenant":
            return queryset.filter(key_prefix="", resource="")
        if self.value() == "key":
            return queryset.exclude(key_prefix="")
        if self.value() == "resource":
            return queryset.exclude(resource="")
        return queryset


class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "hour",
        "tenant",
        "key_prefix",
        "resource",
        "published",
        "published_bytes",
        "delivered",
        "delivered_bytes",
        "acked",
        "dead_lettered",
        "requests",
    )
    list_filter = (UsageLevelFilter, "tenant", "hour")
    date_hierarchy = "hour"
    search_fields = ("tenant__slug", "key_prefix", "resource")
    list_select_related = ("tenant",)
    ordering = ("-hour", "tenant__slug", "key_prefix", "resource")

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageRecord]:
        return UsageRecord.all_tenants.select_related("tenant")


class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "actor", "action", "target_type", "target_id")
    list_filter = ("action", "target_type", "tenant", "created_at")
    search_fields = ("actor", "action", "target_id", "tenant__slug")
    list_select_related = ("tenant",)
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return AuditEvent.all_tenants.select_related("tenant")


admin.site.register(Tenant, TenantAdmin)
admin.site.register(Plan, PlanAdmin)
admin.site.register(User, UserAdmin)
admin.site.register(Membership, MembershipAdmin)
admin.site.register(ApiKey, ApiKeyAdmin)
admin.site.register(UsageRecord, UsageRecordAdmin)
admin.site.register(AuditEvent, AuditEventAdmin)
