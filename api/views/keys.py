"""API keys: create (the secret is shown once), list (never secrets), revoke.

Every operation is bounded by the caller's authority (tenants.authority): a key creates only
keys within its own scopes and resource patterns, and sees, reads and revokes only those; any
other key of the tenant is a 404, exactly like one that does not exist. A console session
acts with its role's authority.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import AUTH_ERRORS, INVALID, page_of, problem
from api.views.base import TenantAPIView
from api.views.queues import StrictCharField, StrictIntegerField, StrictSerializer
from kernel.errors import NotFound
from tenants import selectors, services
from tenants.authority import Authority, key_authority, keys_within, member_authority
from tenants.models import ALL_SCOPES, ApiKey, User
from tenants.quotas import KEY_QUOTAS

KEY_LIMIT_HELP = (
    "The key's own limit (null: the tenant's holds). It narrows the tenant's for requests "
    "with this key; one above the tenant's is kept but the tenant's holds (GET /v1/tenant "
    "shows which)."
)


def _key_limit_field(name: str) -> StrictIntegerField:
    """An optional key limit of a create body: 1..its column's maximum, or null (the
    tenant's holds)."""
    return StrictIntegerField(
        min_value=1,
        max_value=services.KEY_LIMIT_MAX[name],
        required=False,
        allow_null=True,
        default=None,
        help_text=KEY_LIMIT_HELP,
    )


class KeyOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The public part of the key: op_<prefix>_…")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES))
    resources = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    publish_rate_per_second = serializers.IntegerField(
        allow_null=True, help_text=f"{KEY_LIMIT_HELP} Messages published per second."
    )
    consume_rate_per_second = serializers.IntegerField(
        allow_null=True, help_text=f"{KEY_LIMIT_HELP} Messages pulled per second."
    )
    monthly_messages = serializers.IntegerField(
        allow_null=True, help_text=f"{KEY_LIMIT_HELP} Messages published per calendar month."
    )


class KeyCreatedSerializer(KeyOutputSerializer):
    secret = serializers.CharField(help_text="The whole key. Shown only in this answer.")


def key_data(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "resources": list(key.resources),
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "created_at": key.created_at,
        **{name: getattr(key, name) for name in KEY_QUOTAS},
    }


class KeyAPIView(TenantAPIView):
    """A keys endpoint: ``authority`` is what the caller may grant, see and revoke."""

    @property
    def authority(self) -> Authority:
        cached = getattr(self, "_authority", None)
        if cached is None:
            principal = self.principal
            if principal.key_id:
                cached = key_authority(
                    tenant=principal.tenant_id,
                    key_id=principal.key_id,
                    scopes=principal.scopes,
                    resources=principal.resources,
                )
            else:  # a console session (so a signed-in user): its role's authority
                user = cast(User, self.request.user)
                cached = member_authority(tenant=principal.tenant_id, user=user)
            self._authority = cached
        return cached


FORBIDDEN_KEYS = problem(
    "forbidden: the key lacks the manage scope, or the new key would reach beyond the "
    "caller's scopes, resources or expiry (errors name the field); quota_exceeded: too many "
    "active keys"
)


class KeyListCreateView(KeyAPIView):
    scope_map = {"GET": "manage", "POST": "manage"}

    class InputSerializer(StrictSerializer):
        name = StrictCharField(max_length=100)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=ALL_SCOPES),
            allow_empty=False,
            min_length=1,
            max_length=len(ALL_SCOPES),
        )
        resources = serializers.ListField(
            # the service's own pattern, so the schema states exactly what is accepted
            child=StrictCharField(
                max_length=200, validators=[RegexValidator(services.RESOURCE_PATTERN)]
            ),
            required=False,
            default=list,
            help_text="Patterns like queue:orders or topic:events.*; omitted or empty: every "
            "resource (only a caller without patterns may grant that).",
        )
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        publish_rate_per_second = _key_limit_field("publish_rate_per_second")
        consume_rate_per_second = _key_limit_field("consume_rate_per_second")
        monthly_messages = _key_limit_field("monthly_messages")

    @extend_schema(
        operation_id="keys_list",
        parameters=[
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter("cursor", str),
        ],
        responses={200: page_of("Key", KeyOutputSerializer), **INVALID, **AUTH_ERRORS},
        description="The tenant's keys within the caller's authority, newest first.",
    )
    def get(self, request: Request) -> Response:
        page = paginate(
            keys_within(selectors.key_list(tenant=self.tenant), self.authority),
            request.query_params,
            ordering=["-created_at", "id"],
            serialize=key_data,
        )
        return Response(page)

    @extend_schema(
        operation_id="keys_create",
        request=InputSerializer,
        responses={
            201: KeyCreatedSerializer,
            **INVALID,
            **AUTH_ERRORS,
            403: FORBIDDEN_KEYS,
        },
        description="Creates a key within the caller's authority: its scopes among the "
        "caller's, and, when the caller is limited to resource patterns, a non-empty list of "
        "patterns each within one of the caller's.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.key_create(
            tenant=self.tenant,
            actor=self.principal.actor,
            authority=self.authority,
            **data.validated_data,
        )
        return Response({**key_data(created.key), "secret": created.secret}, status=201)


NOT_FOUND_KEY = {
    404: problem("not_found: no such key in this tenant, or one beyond the caller's authority")
}


class KeyDetailView(KeyAPIView):
    scope_map = {"GET": "manage", "DELETE": "manage"}

    @extend_schema(
        operation_id="keys_retrieve",
        responses={200: KeyOutputSerializer, **AUTH_ERRORS, **NOT_FOUND_KEY},
    )
    def get(self, request: Request, key_id: str) -> Response:
        key = selectors.key_get(tenant=self.tenant, key_id=key_id)
        if not self.authority.covers_key(key):
            raise NotFound("No such API key.")
        return Response(key_data(key))

    @extend_schema(
        operation_id="keys_revoke",
        responses={200: KeyOutputSerializer, **AUTH_ERRORS, **NOT_FOUND_KEY},
        description="Revokes the key; every process refuses it within one second. A key "
        "may always revoke itself, and otherwise only keys within its authority.",
    )
    def delete(self, request: Request, key_id: str) -> Response:
        key = services.key_revoke(
            tenant=self.tenant,
            key_id=key_id,
            actor=self.principal.actor,
            authority=self.authority,
        )
        return Response(key_data(key))
