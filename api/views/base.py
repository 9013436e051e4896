"""The one tenant gate: every tenant endpoint subclasses one of these two views.

Before any handler runs, the gate resolves the caller (an API key from the hot cache, or a
console session), checks the scope the HTTP method needs (``scope_map``) and, for a view that
declares ``resource_kind``, looks up the resource named in the URL within the caller's tenant
(404 when it has none: another tenant's name is never a 403) and checks the key's patterns
(403). The handler is called with the resource in place of its name. Subclasses declare what
differs and cannot override the gate itself (``__init_subclass__`` refuses it), so no endpoint
can forget a check.

The control plane uses :class:`TenantAPIView` (DRF, sync: the row, from PostgreSQL); the data
plane uses :class:`AsyncTenantAPIView`, which keeps DRF's schema metadata but runs on the
event loop with nothing between the socket and the engine but authentication and JSON (the
document, from the hot cache: no PostgreSQL query when warm).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from api.errors import platform_error_response, problem_response, to_platform_error
from api.parsers import loads, loads_exact
from api.renderers import dumps
from kernel.errors import MethodNotAllowed, NotFound, PayloadTooLarge, UnsupportedMediaType
from kernel.limits import NAME_PATTERN
from queues import messaging, selectors
from tenants.authority import require_tenant_wide
from tenants.models import Tenant
from tenants.principals import Principal, aauthenticate, client_address

logger = logging.getLogger(__name__)

READ = None  # any authenticated key may read metadata
DEFAULT_SCOPE_MAP: dict[str, str | None] = {
    "GET": READ,
    "HEAD": READ,
    "POST": "manage",
    "PUT": "manage",
    "PATCH": "manage",
    "DELETE": "manage",
}
#: URL parameters that name a topic, queue or subscription.
RESOURCE_KWARGS = ("queue", "topic", "subscription")
_NAME = re.compile(NAME_PATTERN)
#: What a view may not redefine: the gate.
GATE_METHODS = frozenset({"dispatch", "initial", "initialize_request"})


def _guard_gate(cls: type, base: type) -> None:
    """Refuse a subclass of ``base`` that redefines a method of the gate."""
    overridden = sorted(GATE_METHODS & set(vars(cls)))
    if overridden:
        raise TypeError(
            f"{cls.__qualname__} overrides {', '.join(overridden)} of {base.__name__}: the "
            "tenant gate is not for views to change; declare scope_map, resource_kind or "
            "tenant_wide instead."
        )


def require_resource_names(kwargs: Mapping[str, Any]) -> None:
    """404 for a URL parameter that no resource can be named (outside NAME_PATTERN), before
    anything looks it up: PostgreSQL refuses NUL in text, and a name of 10,000 characters is
    not worth a query either."""
    for kind in RESOURCE_KWARGS:
        name = kwargs.get(kind)
        if name is not None and not _NAME.match(name):
            raise NotFound(f"No such {kind}.")


class TenantAPIView(APIView):
    """A DRF view for one tenant's resources. ``self.principal`` is the caller and
    ``self.tenant`` its Tenant row (loaded on first use).

    ``resource_kind`` ("queue", "topic" or "subscription", also the URL parameter's name)
    makes the gate pass the handler that resource's row instead of its name (when the URL has
    one: a list view of the same family has none). ``tenant_wide`` (what the data is, for the
    message) refuses keys limited to some resources."""

    scope_map: ClassVar[dict[str, str | None]] = DEFAULT_SCOPE_MAP
    resource_kind: ClassVar[str | None] = None
    tenant_wide: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_gate(cls, TenantAPIView)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # ApiKeyAuthentication and ConsoleSessionAuthentication both set a Principal, and a
        # request with neither never gets here (DRF answers 401 first).
        self.principal: Principal = cast(Principal, request.auth)
        scope = self.scope_map.get(request.method or "GET")
        if scope is not None:
            self.principal.require_scope(scope)
        require_resource_names(kwargs)
        if self.tenant_wide:
            require_tenant_wide(self.principal.resources, self.tenant_wide)
        kind = self.resource_kind
        if kind is not None and kind in kwargs:
            row = selectors.resource_get(tenant=self.tenant, kind=kind, name=kwargs[kind])
            selectors.require_access(self.principal, row)
            # DRF calls the handler with the very dict it keeps as self.kwargs.
            self.kwargs[kind] = row

    @property
    def tenant(self) -> Tenant:
        cached = getattr(self, "_tenant", None)
        if cached is None:
            cached = self._tenant = Tenant.objects.select_related("plan").get(
                pk=self.principal.tenant_id
            )
        return cached


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(dumps(data), status=status, content_type="application/json")


class AsyncTenantAPIView(APIView):
    """An async view for the hot path. Handlers are ``async def post(self, request, principal,
    resource)`` (``resource``: the cached document of the ``resource_kind`` the URL names) and
    return an HttpResponse; errors become problem+json here. A method the view has no handler
    for is a 405 with ``Allow`` (RFC 9110), before the key is checked."""

    scope_map: ClassVar[dict[str, str | None]] = DEFAULT_SCOPE_MAP
    resource_kind: ClassVar[messaging.Kind]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_gate(cls, AsyncTenantAPIView)

    def allowed_method_names(self) -> list[str]:
        """The methods this view serves (OPTIONS is not one: it is answered 405 too)."""
        return [
            name.upper()
            for name in self.http_method_names
            if name not in ("options", "trace") and hasattr(self, name)
        ]

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        self.args, self.kwargs = args, kwargs
        self.request = request  # type: ignore[assignment]  # a plain HttpRequest: no DRF Request on the hot path
        method = (request.method or "GET").upper()
        # Only the HTTP verbs: getattr() of any method name would also find "dispatch".
        allowed = self.allowed_method_names()
        handler: Callable[..., Awaitable[HttpResponse]] | None = (
            getattr(self, method.lower()) if method in allowed else None
        )
        try:
            if handler is None:
                response = platform_error_response(
                    MethodNotAllowed(f"Method {method} is not allowed here.")
                )
                response["Allow"] = ", ".join(allowed)
                return response
            principal = await aauthenticate(
                request.META.get("HTTP_AUTHORIZATION"), address=client_address(request.META)
            )
            scope = self.scope_map.get(method)
            if scope is not None:
                principal.require_scope(scope)
            require_resource_names(kwargs)
            kind = self.resource_kind
            resource = await messaging.resolve(principal, kind, kwargs[kind])
            return await handler(request, principal, resource)
        except Exception as exc:
            error = to_platform_error(exc)
            if error is None:
                logger.exception("unhandled error in %s %s", method, request.path)
                return problem_response(
                    500, "internal_error", "Internal server error", "An unexpected error occurred."
                )
            return platform_error_response(error)


def read_json(request: HttpRequest, *, empty: Any = None, exact: bool = False) -> Any:
    """The request's JSON body (``empty`` when there is none). 415 for another media type,
    413 for a body over the server's limit, 400 for malformed JSON. ``exact`` keeps every
    number as the client wrote it (:func:`api.parsers.loads_exact`), for what is stored."""
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise PayloadTooLarge("The request body is larger than the server accepts.") from exc
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and len(raw) > limit:  # a chunked upload has no Content-Length to check
        raise PayloadTooLarge("The request body is larger than the server accepts.")
    if not raw:
        return empty if empty is not None else {}
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType("Send the request body as application/json.")
    return loads_exact(raw) if exact else loads(raw)
