"""The OpenAPI description: shapes shared by every endpoint, and the rules that make the
generated schema state the contract of API.md rather than merely sketch it.

PlatformAutoSchema applies them to every operation, so no view can forget one:

- a path parameter that names a topic, queue or subscription has the name pattern;
- a list answered with :func:`page_of` takes ``limit`` (1..200, default 50) and ``cursor``,
  the parameters of api.pagination;
- a request body of a StrictSerializer is closed (``additionalProperties: false``), as the
  view refuses unknown fields;
- each operation lists every error status it can answer: 401 and 403 (and 503, the hot
  cache being in Redis) and 429 (too many refused keys from one address) whenever a key is
  required, 400/413/415 with a request body, 400 with query parameters, 404 with a resource
  in the path. Views add the statuses of their own (409, a 403 for a quota, ...) and their
  own wording.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, cast

from drf_spectacular.generators import EndpointEnumerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_parameter_type
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import (
    Direction,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    inline_serializer,
)
from rest_framework import serializers

from api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.views.base import RESOURCE_KWARGS as RESOURCE_PARAMETERS
from kernel.limits import MAX_ATTRIBUTE_NAME, MAX_ATTRIBUTES, NAME_PATTERN


def ecma(pattern: str) -> str:
    r"""A Python pattern anchored with ``\A`` and ``\Z`` as the ECMA 262 pattern of JSON
    Schema (``^`` and ``$``)."""
    if pattern.startswith(r"\A"):
        pattern = "^" + pattern[2:]
    if pattern.endswith(r"\Z"):
        pattern = pattern[:-2] + "$"
    return pattern


#: OpenAPI 3.0 has no ``propertyNames`` (JSON Schema, and so OpenAPI 3.1, has): the names of
#: a message's attributes are only described in words until the schema is 3.1.
SCHEMA_HAS_PROPERTY_NAMES = not spectacular_settings.OAS_VERSION.startswith("3.0")


#: Text that identifies or is compared (attribute names and values, keys, dedup ids): no NUL,
#: which PostgreSQL's text refuses.
TEXT_PATTERN = r"^[^\u0000]*$"


def attributes_schema(*, reserved_prefix: str | None = None) -> dict[str, Any]:
    """Message attributes (or a filter on them): up to MAX_ATTRIBUTES string values, names of
    1 to MAX_ATTRIBUTE_NAME characters (not starting ``reserved_prefix``), no NUL in either."""
    names = f"names of 1 to {MAX_ATTRIBUTE_NAME} characters"
    if reserved_prefix:
        names += f", not starting '{reserved_prefix}'"
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": {"type": "string", "pattern": TEXT_PATTERN},
        "maxProperties": MAX_ATTRIBUTES,
        "description": f"Up to {MAX_ATTRIBUTES} string values; {names}; no NUL.",
    }
    if SCHEMA_HAS_PROPERTY_NAMES:
        schema["propertyNames"] = {
            "minLength": 1,
            "maxLength": MAX_ATTRIBUTE_NAME,
            "pattern": TEXT_PATTERN,
        }
        if reserved_prefix:
            schema["propertyNames"]["not"] = {"pattern": f"^{reserved_prefix}"}
    return schema


NAME_HELP = "1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric."
NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": ecma(NAME_PATTERN), "maxLength": 128}

PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        description=f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    ),
    OpenApiParameter(
        "cursor",
        {"type": "string", "minLength": 1},
        description="The `next` of the previous page; omit it for the first page.",
    ),
]


class ProblemItemSerializer(serializers.Serializer[Any]):
    index = serializers.IntegerField(required=False, help_text="The bad item of a batch.")
    field = serializers.CharField(required=False, allow_blank=True)
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer[Any]):
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
            "method_not_allowed",
            "conflict",
            "payload_too_large",
            "unsupported_media_type",
            "quota_exceeded",
            "rate_limited",
            "unavailable",
        ]
    )
    # A declared field: DRF's metaclass takes it off the class, so .errors keeps working.
    errors = ProblemItemSerializer(many=True, required=False)  # type: ignore[assignment]


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ProblemSerializer, description=description)


AUTH_ERRORS = {
    401: problem("unauthenticated: missing, malformed, unknown, expired or revoked API key"),
    403: problem("forbidden: the key lacks the scope or the resource"),
}
NOT_FOUND = {404: problem("not_found: no such resource in this tenant")}
INVALID = {400: problem("invalid_request: the body or a parameter is invalid")}
UNAVAILABLE = {503: problem("unavailable: a backing service is down; see Retry-After")}
TOO_LARGE = {413: problem("payload_too_large: the request body is over the server's limit")}
MEDIA_TYPE = {415: problem("unsupported_media_type: the body is not application/json")}
RATE_LIMITED = {
    429: problem("rate_limited: too many refused keys from this address; see Retry-After")
}

_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds to wait before trying again.",
        "required": True,
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "schema": {"type": "string"},
        "description": 'Bearer realm="openplatform"',
        "required": True,
    }
}
_HEADERS = {"401": _WWW_AUTHENTICATE, "429": _RETRY_AFTER, "503": _RETRY_AFTER}
#: The IETF "RateLimit header fields for HTTP" (draft) on every data-plane answer, 2xx and
#: 429: the limit nearest to exhaustion among those the call met (queues.messaging).
_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "schema": {"type": "string"},
        "description": (
            'The limit nearest to exhaustion: `"<policy>";q=<quota>;w=<window seconds>`, '
            "policy one of publish, key-publish, consume, key-consume, requests (per second), "
            "monthly, key-monthly (per calendar month, UTC). Absent when no limit applies."
        ),
        "required": False,
    },
    "RateLimit": {
        "schema": {"type": "string"},
        "description": (
            'What is left of it: `"<policy>";r=<remaining>;t=<seconds until it resets>`.'
        ),
        "required": False,
    },
}
#: The data-plane operations (POST on these path endings) that carry them.
_DATA_PLANE_VERBS = ("/messages", "/pull", "/ack", "/nack", "/modify-deadline")


def problem_media_type(
    result: dict[str, Any], generator: object, request: object, public: bool
) -> dict[str, Any]:
    """A POSTPROCESSING_HOOK: error answers are ``application/problem+json`` (API.md), but
    drf-spectacular labels every response with the renderer's media type (``application/json``,
    or a download's ``text/csv`` / ``application/pdf``)."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content") if isinstance(response, dict) else None
                if str(status).startswith(("4", "5")) and content:
                    if "application/problem+json" not in content:
                        media_type = next(iter(content))
                        content["application/problem+json"] = content.pop(media_type)
                    for other in [m for m in content if m != "application/problem+json"]:
                        del content[other]
    return result


def page_of(name: str, item: type[serializers.Serializer[Any]]) -> serializers.Serializer[Any]:
    """A page of a cursor-paginated list; an operation answering one takes PAGE_PARAMETERS."""
    page = inline_serializer(
        name=f"{name}Page",
        fields={
            "results": item(many=True),
            "next": serializers.CharField(
                allow_null=True, help_text="The cursor of the next page; null on the last."
            ),
        },
    )
    page.is_page = True  # type: ignore[attr-defined]
    return page


@functools.cache
def _endpoints() -> tuple[tuple[str, str], ...]:
    """Every (path, method) the schema describes, in order."""
    return tuple(
        sorted({(path, method) for path, _, method, _ in EndpointEnumerator().get_api_endpoints()})
    )


def _resource_parameter_below(collection: str, path: str) -> str | None:
    """The resource parameter of ``path`` when it is an operation on a member of the
    collection ``collection`` (``/v1/queues`` → ``/v1/queues/{queue}/pull`` is ``queue``)."""
    for parameter in RESOURCE_PARAMETERS:
        if path == f"{collection}/{{{parameter}}}" or path.startswith(
            f"{collection}/{{{parameter}}}/"
        ):
            return parameter
    return None


def _operation_ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def _link_name(path: str, method: str) -> str:
    return method.lower() + path.replace("/v1", "").replace("{", "").replace("}", "").replace(
        "/", "_"
    )


class PlatformAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema with the rules of the module docstring, minus the base
    views' own docstrings (a view class with no docstring would otherwise describe its
    operations with the tenant gate's internals)."""

    # AutoSchema itself narrows ViewInspector's get_description(path, method) to this.
    def get_description(self) -> str:  # type: ignore[override]
        from rest_framework.views import APIView

        from api.views.base import AsyncTenantAPIView, TenantAPIView

        description = super().get_description()
        inherited = {inspect.getdoc(cls) for cls in (TenantAPIView, AsyncTenantAPIView, APIView)}
        return "" if description in inherited else description

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["name"] in RESOURCE_PARAMETERS:
                parameter["schema"] = dict(NAME_SCHEMA)
                parameter["description"] = f"The {parameter['name']}'s name: {NAME_HELP}"
        return parameters

    def _is_page(self) -> bool:
        responses = self.get_response_serializers()
        return isinstance(responses, dict) and getattr(responses.get(200), "is_page", False)

    def _process_override_parameters(self, direction: str = "request") -> dict[Any, Any]:
        # after every @extend_schema(parameters=...), which may declare a bare limit/cursor
        parameters: dict[Any, Any] = super()._process_override_parameters(direction)
        if self._is_page():
            for parameter in PAGE_PARAMETERS:
                parameters[parameter.name, parameter.location] = build_parameter_type(
                    name=parameter.name,
                    schema=cast("dict[str, Any]", parameter.type),  # a JSON schema, above
                    location=parameter.location,
                    description=parameter.description,
                )
        return parameters

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        from api.views.queues import StrictSerializer

        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictSerializer):
            if direction == "request":
                schema["additionalProperties"] = False
            # its docstring is about the mechanism, not about this body
            if schema.get("description") == inspect.getdoc(StrictSerializer):
                del schema["description"]
        schema.update(getattr(serializer, "schema_extra", {}))
        return schema

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if isinstance(serializer, PolymorphicProxySerializer) and isinstance(
            serializer.serializers, list | tuple
        ):
            # one of several bodies: required when each of them has a required field
            required = all(
                self._get_request_for_media_type(branch, direction)[1]
                for branch in serializer.serializers
            )
        return schema, required

    def _common_errors(self) -> dict[int, OpenApiResponse]:
        """The error statuses every operation of this shape can answer (module docstring)."""
        errors: dict[int, OpenApiResponse] = {}
        parameters = self._get_parameters()
        if any(p["in"] == "query" for p in parameters):
            errors.update(INVALID)
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors.update({**INVALID, **TOO_LARGE, **MEDIA_TYPE})
        if any(p["in"] == "path" for p in parameters):
            errors.update(NOT_FOUND)
        auths = self.get_auth()
        if auths and {} not in auths:  # {}: callable without a key
            # 429: an address that sent too many refused keys (tenants.principals)
            errors.update({**AUTH_ERRORS, **RATE_LIMITED, **UNAVAILABLE})
        return errors

    def _links(self) -> dict[str, dict[str, Any]]:
        """OpenAPI links from this operation's success to the operations its answer feeds
        (for clients, and for Schemathesis's stateful phase): a created resource to every
        operation on it, a created topic to a subscription on it; a publish to a queue to
        its pull; a pull to the ack, nack and modify-deadline of what it delivered."""
        links: dict[str, dict[str, Any]] = {}
        endpoints = _endpoints()
        if self.method == "POST":
            for path, method in endpoints:
                parameter = _resource_parameter_below(self.path, path)
                if parameter is not None:
                    links[_link_name(path, method)] = {
                        "operationRef": _operation_ref(path, method),
                        "parameters": {f"path.{parameter}": "$response.body#/name"},
                    }
            if self.path == "/v1/topics" and ("/v1/subscriptions", "POST") in endpoints:
                links[_link_name("/v1/subscriptions", "POST")] = {
                    "operationRef": _operation_ref("/v1/subscriptions", "POST"),
                    "requestBody": {"topic": "$response.body#/name"},
                }
        parameter = next((p for p in RESOURCE_PARAMETERS if f"{{{p}}}" in self.path), None)
        if parameter is None or self.method != "POST":
            return links
        base, _, verb = self.path.rpartition("/")
        targets: dict[str, dict[str, list[str]] | None]
        if verb == "messages" and parameter == "queue":
            targets = {"pull": None}
        elif verb == "pull":
            ack_ids = {"ack_ids": ["$response.body#/messages/0/ack_id"]}
            targets = {"ack": ack_ids, "nack": ack_ids, "modify-deadline": ack_ids}
        else:
            targets = {}
        for target, body in targets.items():
            if (f"{base}/{target}", "POST") in endpoints:
                link: dict[str, Any] = {
                    "operationRef": _operation_ref(f"{base}/{target}", "POST"),
                    "parameters": {f"path.{parameter}": f"$request.path.{parameter}"},
                }
                if body is not None:
                    link["requestBody"] = body
                links[_link_name(f"{base}/{target}", "POST")] = link
        return links

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        links = self._links()
        success = next((status for status in responses if status.startswith("2")), None)
        if links and success is not None:
            responses[success]["links"] = links
        for status, error in sorted(self._common_errors().items()):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error, str(status), direction=direction
                )
        for code, headers in _HEADERS.items():
            if code in responses:
                responses[code].setdefault("headers", {}).update(headers)
        if self.method == "POST" and self.path.endswith(_DATA_PLANE_VERBS):
            for code in responses:
                if code.startswith("2") or code == "429":
                    responses[code].setdefault("headers", {}).update(_RATE_LIMIT_HEADERS)
        return dict(sorted(responses.items()))
