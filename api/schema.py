"""Shapes shared by the OpenAPI description of every endpoint."""

from __future__ import annotations

import inspect

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class ProblemItemSerializer(serializers.Serializer):
    index = serializers.IntegerField(required=False, help_text="The bad item of a batch.")
    field = serializers.CharField(required=False)
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """application/problem+json (RFC 9457)."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.ChoiceField(
        choices=[
            "invalid_request",
            "unauthenticated",
            "forbidden",
            "not_found",
            "conflict",
            "payload_too_large",
            "unsupported_media_type",
            "quota_exceeded",
            "rate_limited",
            "unavailable",
        ]
    )
    errors = ProblemItemSerializer(many=True, required=False)


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ProblemSerializer, description=description)


AUTH_ERRORS = {
    401: problem("unauthenticated: missing, malformed, unknown, expired or revoked API key"),
    403: problem("forbidden: the key lacks the scope or the resource"),
}
NOT_FOUND = {404: problem("not_found: no such resource in this tenant")}
INVALID = {400: problem("invalid_request: the body or a parameter is invalid")}
UNAVAILABLE = {503: problem("unavailable: a backing service is down; see Retry-After")}


def problem_media_type(result: dict, generator: object, request: object, public: bool) -> dict:
    """A POSTPROCESSING_HOOK: error answers are ``application/problem+json`` (API.md), but
    drf-spectacular labels every response with the renderer's ``application/json``."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content") if isinstance(response, dict) else None
                if str(status).startswith(("4", "5")) and content and "application/json" in content:
                    content["application/problem+json"] = content.pop("application/json")
    return result


def page_of(name: str, item: type[serializers.Serializer]) -> serializers.Serializer:
    return inline_serializer(
        name=f"{name}Page",
        fields={
            "results": item(many=True),
            "next": serializers.CharField(allow_null=True),
        },
    )


class PlatformAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, minus the base views' own docstrings: a view class with
    no docstring would otherwise describe its operations with the tenant gate's internals."""

    def get_description(self) -> str:
        from rest_framework.views import APIView

        from api.views.base import AsyncTenantAPIView, TenantAPIView

        description = super().get_description()
        inherited = {inspect.getdoc(cls) for cls in (TenantAPIView, AsyncTenantAPIView, APIView)}
        return "" if description in inherited else description
