"""The caller's tenant, its usage and its audit trail.

Usage and the audit trail are tenant-wide (they count and name every resource and key), so a
key limited to resource patterns is refused them with 403 forbidden. ``GET /v1/tenant`` (the
plan and quotas that apply to every key) stays readable by any key of the tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import AUTH_ERRORS, INVALID, page_of, problem
from api.views.base import TenantAPIView
from kernel.errors import InvalidRequest
from tenants import selectors
from tenants.models import AuditEvent
from tenants.quotas import KEY_QUOTAS, QUOTAS, Effective, effective_quotas, key_quotas


def _quota_help(label: str, unit: str) -> str:
    return f"{label}." if unit == label.lower() else f"{label} ({unit})."


def _quotas_serializer(name: str, sources: list[str], help_text: str, **kwargs: Any) -> Any:
    """An object with one member per quota (tenants.quotas.QUOTAS), each
    ``{"value": int | null (unlimited), "source": <where it is set>}``."""
    entry = inline_serializer(
        name=f"{name}Entry",
        fields={
            "value": serializers.IntegerField(
                allow_null=True, help_text="The limit that holds; null: unlimited."
            ),
            "source": serializers.ChoiceField(
                choices=sources,
                help_text="plan: the plan's; tenant: an operator's override for this tenant"
                + ("; key: the calling key's own, narrower limit." if "key" in sources else "."),
            ),
        },
    )
    return inline_serializer(
        name=name,
        fields={
            quota.name: type(entry)(help_text=_quota_help(quota.label, quota.unit))
            for quota in QUOTAS
        },
        help_text=help_text,
        **kwargs,
    )


class TenantOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()
    created_at = serializers.DateTimeField()
    plan = inline_serializer(
        name="Plan", fields={"slug": serializers.CharField(), "name": serializers.CharField()}
    )
    quotas = _quotas_serializer(
        "TenantQuotas",
        ["plan", "tenant"],
        "Every quota of the tenant as it holds now: its plan's, or an operator's override.",
    )
    key_quotas = _quotas_serializer(
        "KeyQuotas",
        ["plan", "tenant", "key"],
        "Only when the calling API key has limits of its own: the quotas requests with this "
        "key meet, each the tighter of the tenant's and the key's (source key where the "
        "key's holds; a key limit above the tenant's changes nothing).",
        required=False,
    )
    usage = serializers.DictField(help_text="This calendar month's traffic.")


def _quota_map(quotas: Mapping[str, Effective]) -> dict[str, dict[str, Any]]:
    return {name: limit.as_dict() for name, limit in quotas.items()}


class TenantView(TenantAPIView):
    @extend_schema(
        operation_id="tenant_retrieve",
        responses={200: TenantOutputSerializer, **AUTH_ERRORS},
        description="The tenant, its plan, its effective quotas (where each comes from) and "
        "this calendar month's usage; for a key with limits of its own, also the quotas its "
        "requests meet (key_quotas).",
    )
    def get(self, request: Request) -> Response:
        tenant = self.tenant
        quotas = effective_quotas(tenant)
        data: dict[str, Any] = {
            "id": tenant.id,
            "name": tenant.name,
            "slug": tenant.slug,
            "created_at": tenant.created_at,
            "plan": {"slug": tenant.plan.slug, "name": tenant.plan.name},
            "quotas": _quota_map(quotas),
            "usage": selectors.usage_this_period(tenant=tenant),
        }
        if self.principal.key_id:  # a console session has no key, so no key limits
            key = selectors.key_get(tenant=tenant, key_id=self.principal.key_id)
            if any(getattr(key, name) is not None for name in KEY_QUOTAS):
                data["key_quotas"] = _quota_map(key_quotas(key, quotas))
        return Response(data)


_WITH_BY = "Only with by=key or by=resource"


class UsageOutputSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="The hour, or the UTC day, the entry counts.")
    key_prefix = serializers.CharField(
        required=False, help_text="Only with by=key: the API key's prefix (op_<prefix>_…)."
    )
    key_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Only with by=key: the key's id (null once the key is deleted).",
    )
    key_name = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Only with by=key: the key's name (null once the key is deleted).",
    )
    resource = serializers.CharField(
        required=False,
        help_text='Only with by=resource: "<kind>:<name>", kind queue, topic or subscription.',
    )
    published = serializers.IntegerField(help_text="Messages published.")
    published_bytes = serializers.IntegerField(help_text="Bytes of bodies and attributes in.")
    delivered = serializers.IntegerField(help_text="Messages delivered by pulls.")
    delivered_bytes = serializers.IntegerField(
        required=False, help_text=f"{_WITH_BY}: bytes of bodies and attributes out."
    )
    acked = serializers.IntegerField(help_text="Messages acknowledged.")
    dead_lettered = serializers.IntegerField(
        required=False, help_text=f"{_WITH_BY}: messages moved to a dead-letter queue."
    )
    requests = serializers.IntegerField(
        required=False, help_text=f"{_WITH_BY}: data-plane API requests."
    )


#: The columns of an entry without ``by`` (the answer as it was before breakdowns).
_TOTAL_COLUMNS = ("start", "published", "published_bytes", "delivered", "acked")


def _parse_time(raw: str | None, name: str, default: datetime) -> datetime:
    if raw is None:  # absent; an empty ?to= is a value, and not a time
        return default
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        # In UTC: PostgreSQL takes offsets up to 15:59 only, and Python allows 23:59.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:  # Overflow: shifted out of years 1..9999
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time.", errors=[{"field": name, "detail": "Invalid time."}]
        ) from exc


FORBIDDEN_TENANT_WIDE = {
    403: problem(
        "forbidden: the key lacks the manage scope, or is limited to resource patterns "
        "(this data covers the whole tenant)"
    )
}


class TenantWideView(TenantAPIView):
    """Tenant-wide data: needs manage and a key without resource patterns."""

    scope_map = {"GET": "manage"}


class UsageView(TenantWideView):
    """The tenant's rolled-up usage per hour or day: its totals, or with ``by`` per API key
    or per resource (each entry then also has delivered_bytes, dead_lettered and requests).
    Without ``by`` the answer is exactly what it was before breakdowns existed."""

    tenant_wide = "usage"

    @extend_schema(
        operation_id="usage_list",
        parameters=[
            OpenApiParameter(
                "from", OpenApiTypes.DATETIME, description="RFC 3339; default 24 hours ago"
            ),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="RFC 3339; default now"),
            OpenApiParameter("granularity", str, enum=["hour", "day"]),
            OpenApiParameter(
                "by",
                str,
                enum=list(selectors.USAGE_BREAKDOWNS),
                description="Break each period down per API key (key) or per queue, topic and "
                "subscription (resource): one entry per period and key or resource with "
                "traffic, ordered by it. Absent: the tenant's totals.",
            ),
        ],
        responses={
            200: inline_serializer(
                name="UsagePage", fields={"results": UsageOutputSerializer(many=True)}
            ),
            **INVALID,
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
        },
    )
    def get(self, request: Request) -> Response:
        now = datetime.now(UTC)
        end = _parse_time(request.query_params.get("to"), "to", now)
        start = _parse_time(request.query_params.get("from"), "from", end - timedelta(days=1))
        granularity = request.query_params.get("granularity", "hour")
        if granularity not in ("hour", "day"):
            raise InvalidRequest(
                "granularity must be 'hour' or 'day'.",
                errors=[{"field": "granularity", "detail": "Invalid choice."}],
            )
        by = request.query_params.get("by")
        if by is not None and by not in selectors.USAGE_BREAKDOWNS:
            raise InvalidRequest(
                "by must be 'key' or 'resource'.",
                errors=[{"field": "by", "detail": "Invalid choice."}],
            )
        if start > end:
            raise InvalidRequest("from must not be after to.")
        series = selectors.usage_series(
            tenant=self.tenant, start=start, end=end, granularity=granularity, by=by
        )
        if by is None:
            series = [{name: entry[name] for name in _TOTAL_COLUMNS} for entry in series]
        return Response({"results": series})


class AuditEventOutputSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    actor = serializers.CharField()
    action = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    data = serializers.DictField()  # type: ignore[assignment]  # the stubs take it for Serializer.data
    created_at = serializers.DateTimeField()


def audit_data(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
        "created_at": event.created_at,
    }


class AuditEventListView(TenantWideView):
    tenant_wide = "the audit trail"

    @extend_schema(
        operation_id="audit_events_list",
        parameters=[
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter("cursor", str),
        ],
        responses={
            200: page_of("AuditEvent", AuditEventOutputSerializer),
            **INVALID,
            **AUTH_ERRORS,
            **FORBIDDEN_TENANT_WIDE,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(
            paginate(
                selectors.audit_event_list(tenant=self.tenant),
                request.query_params,
                ordering=["-id"],
                serialize=audit_data,
            )
        )
