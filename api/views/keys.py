"""API keys: create (the secret is shown once), list (never secrets), revoke."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.pagination import paginate
from api.schema import AUTH_ERRORS, INVALID, NOT_FOUND, page_of, problem
from api.views.base import TenantAPIView
from tenants import selectors, services
from tenants.models import ALL_SCOPES, ApiKey


class KeyOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The public part of the key: op_<prefix>_…")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES))
    resources = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


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
    }


class KeyListCreateView(TenantAPIView):
    scope_map = {"GET": "manage", "POST": "manage"}

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=ALL_SCOPES), allow_empty=False
        )
        resources = serializers.ListField(
            child=serializers.CharField(max_length=200), required=False, default=list
        )
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    @extend_schema(
        operation_id="keys_list",
        parameters=[
            OpenApiParameter("limit", int, description="1..200, default 50"),
            OpenApiParameter("cursor", str),
        ],
        responses={200: page_of("Key", KeyOutputSerializer), **AUTH_ERRORS},
    )
    def get(self, request: Request) -> Response:
        page = paginate(
            selectors.key_list(tenant=self.tenant),
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
            403: problem("forbidden (scope) or quota_exceeded (too many keys)"),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.key_create(
            tenant=self.tenant, actor=self.principal.actor, **data.validated_data
        )
        return Response({**key_data(created.key), "secret": created.secret}, status=201)


class KeyDetailView(TenantAPIView):
    scope_map = {"GET": "manage", "DELETE": "manage"}

    @extend_schema(
        operation_id="keys_retrieve",
        responses={200: KeyOutputSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, key_id: str) -> Response:
        key = selectors.key_get(tenant=self.tenant, key_id=key_id)
        return Response(key_data(key))

    @extend_schema(
        operation_id="keys_revoke",
        responses={200: KeyOutputSerializer, **AUTH_ERRORS, **NOT_FOUND},
        description="Revokes the key; every process refuses it within one second.",
    )
    def delete(self, request: Request, key_id: str) -> Response:
        key = services.key_revoke(tenant=self.tenant, key_id=key_id, actor=self.principal.actor)
        return Response(key_data(key))
