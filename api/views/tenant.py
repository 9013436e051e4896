"""The caller's tenant, its usage and its audit trail.

Usage and the audit trail are tenant-wide (they count and name every resource and key), so a
key limited to resource patterns is refused them with 403 forbidden. ``GET /v1/tenant`` (the
plan and quotas that apply to every key) stays readable by any key of the tenant.
"""

from __future__ import annotations

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
from tenants.models import AuditEvent, UsageRecord


class TenantOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()
    created_at = serializers.DateTimeField()
    plan = inline_serializer(
        name="Plan", fields={"slug": serializers.CharField(), "name": serializers.CharField()}
    )
    quotas = serializers.DictField()
    usage = serializers.DictField(help_text="This calendar month's traffic.")


class TenantView(TenantAPIView):
    @extend_schema(
        operation_id="tenant_retrieve", responses={200: TenantOutputSerializer, **AUTH_ERRORS}
    )
    def get(self, request: Request) -> Response:
        tenant = self.tenant
        return Response(
            {
                "id": tenant.id,
                "name": tenant.name,
                "slug": tenant.slug,
                "created_at": tenant.created_at,
                "plan": {"slug": tenant.plan.slug, "name": tenant.plan.name},
                "quotas": tenant.plan.quotas(),
                "usage": selectors.usage_this_period(tenant=tenant),
            }
        )


class UsageOutputSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField()
    published = serializers.IntegerField()
    published_bytes = serializers.IntegerField()
    delivered = serializers.IntegerField()
    acked = serializers.IntegerField()


def _parse_time(raw: str | None, name: str, default: datetime) -> datetime:
    if raw is None:  # absent; an empty ?to= is a value, and not a time
        return default
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time.", errors=[{"field": name, "detail": "Invalid time."}]
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    tenant_wide = "usage"

    @extend_schema(
        operation_id="usage_list",
        parameters=[
            OpenApiParameter(
                "from", OpenApiTypes.DATETIME, description="RFC 3339; default 24 hours ago"
            ),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="RFC 3339; default now"),
            OpenApiParameter("granularity", str, enum=["hour", "day"]),
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
        if start > end:
            raise InvalidRequest("from must not be after to.")
        buckets: dict[datetime, dict[str, Any]] = {}
        record: UsageRecord
        for record in selectors.usage_list(tenant=self.tenant, start=start, end=end):
            when = record.hour
            if granularity == "day":
                when = when.replace(hour=0)
            bucket = buckets.setdefault(
                when,
                {"start": when, "published": 0, "published_bytes": 0, "delivered": 0, "acked": 0},
            )
            bucket["published"] += record.published
            bucket["published_bytes"] += record.published_bytes
            bucket["delivered"] += record.delivered
            bucket["acked"] += record.acked
        return Response({"results": list(buckets.values())})


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
