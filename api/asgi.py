"""How API requests reach their views under ASGI, without paying for the console's machinery.

Django's ASGI handler runs each request in its own thread-sensitive context: the first
synchronous call of a request (the request_started signal, the console's middleware, closing
the response) starts a new worker thread for it, and every middleware without native async
support hops to that thread and back. That is most of what a warm publish would cost. So:

- :class:`DataPlaneApp` serves the async data-plane views (publish, pull, ack, nack,
  modify-deadline) on the event loop alone: it builds Django's request, calls the resolved
  view, adds the security headers, and sends the response. No thread is ever involved, so a
  publish is an event-loop task and one Redis round trip.
- :class:`ApiASGIHandler` serves the other Bearer-authenticated API requests (the sync DRF
  control plane) through Django's handler with only the security headers as middleware.
- Everything else (console, admin, session-authenticated API calls) keeps the full stack.

openplatform.asgi routes between them.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch

from api.admission import PUBLISH, PULL, SETTLE, FairAdmission, RefusalMemory, caller_of
from api.errors import problem_response

Handler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
_Response = TypeVar("_Response", bound=HttpResponseBase)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _unused(request: HttpRequest) -> HttpResponseBase:  # pragma: no cover - never called
    raise AssertionError("header middleware is only asked for its process_* methods")


class _Headers:
    """What Django's security and clickjacking middleware add to a response (and the HTTPS
    redirect), computed once from the settings: they only look at the request and set
    headers, so they need no thread, and need not re-read the settings per request."""

    def __init__(self) -> None:
        self.security = SecurityMiddleware(_unused)
        self.static: list[tuple[str, str]] = [("X-Frame-Options", settings.X_FRAME_OPTIONS)]
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            self.static.append(("X-Content-Type-Options", "nosniff"))
        if settings.SECURE_REFERRER_POLICY:
            policy = settings.SECURE_REFERRER_POLICY
            if not isinstance(policy, str):
                policy = ",".join(policy)
            self.static.append(("Referrer-Policy", policy))
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            self.static.append(
                ("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
            )
        # the HSTS header exactly as SecurityMiddleware builds it, sent on HTTPS only
        self.hsts = (
            SecurityMiddleware(_unused)
            .process_response(_SecureProbe(), HttpResponse())
            .get("Strict-Transport-Security")
        )
        self.redirect = settings.SECURE_SSL_REDIRECT

    def before(self, request: HttpRequest) -> HttpResponse | None:
        """The checks that precede the view: the Host header against ALLOWED_HOSTS (as
        CommonMiddleware does on the full stack) and the HTTPS redirect."""
        try:
            request.get_host()
        except DisallowedHost:
            return problem_response(
                400, "invalid_request", "Invalid request", "The Host header is not allowed."
            )
        return self.security.process_request(request) if self.redirect else None

    def after(self, request: HttpRequest, response: _Response) -> _Response:
        headers = response.headers
        for name, value in self.static:
            if name not in headers:
                headers[name] = value
        if self.hsts and request.is_secure() and "Strict-Transport-Security" not in headers:
            headers["Strict-Transport-Security"] = self.hsts
        # Only a streaming response is not an HttpResponse; its length is not known up front.
        if isinstance(response, HttpResponse) and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(response.content))
        return response


class _SecureProbe(HttpRequest):
    """A request that says it came over HTTPS: asks SecurityMiddleware for its HSTS header."""

    def is_secure(self) -> bool:
        return True


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with the header work as its only middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Callable[..., Any]] = []
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []
        # An async handler in, an async one out: the stub's return type covers both modes.
        inner = cast(
            Handler,
            convert_exception_to_response(
                self._get_response_async  # type: ignore[attr-defined]  # private, not in the stubs
            ),
        )
        headers = _Headers()

        async def chain(request: HttpRequest) -> HttpResponseBase:
            response = headers.before(request) or await inner(request)
            return headers.after(request, response)

        self._middleware_chain = chain


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class DataPlaneApp:
    """Serves one resolved async view per request on the event loop (see module docstring).

    The router hands over the ResolverMatch in ``scope["openplatform.match"]``. While a view
    whose class says ``may_wait`` runs (a pull), the app listens for the client going away, so
    a long poll whose client left is cancelled at once instead of waiting up to 20 seconds.
    """

    def __init__(self) -> None:
        self.headers = _Headers()
        self.refusals = RefusalMemory()
        self.admission = FairAdmission(settings.DATA_PLANE_TENANT_CONCURRENCY)
        self._ops: dict[Any, str | None] = {}

    def _op(self, match: ResolverMatch, method: str) -> str | None:
        """The data-plane operation (publish, pull, settle) a POST to ``match`` is."""
        key = (match.func, method)
        if key not in self._ops:
            cls = getattr(match.func, "cls", None)
            verb = getattr(cls, "verb", None)
            op: str | None = None
            if method == "POST" and verb is not None:
                op = PULL if verb == "pull" else SETTLE
            elif method == "POST" and getattr(cls, "scope_map", {}).get("POST") == "publish":
                op = PUBLISH
            self._ops[key] = op
        return self._ops[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: ResolverMatch = scope["openplatform.match"]
        started = time.time()
        op = self._op(match, scope["method"])
        caller = caller_of(scope) if op is not None else None
        if caller is not None and op is not None and self.refusals:
            refused = self.refusals.refusal(op, caller, scope)
            if refused is not None:
                # The script refused this scope's rate in this very second: so would it now.
                headers = list(refused.headers)
                if self.headers.hsts and scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", self.headers.hsts.encode()))
                await send(
                    {"type": "http.response.start", "status": refused.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": refused.body})
                return
        try:
            body = await self._read_body(receive)
        except _Disconnected:
            return
        except _TooLarge:
            await self._send(
                problem_response(
                    413,
                    "payload_too_large",
                    "Payload too large",
                    "The request body is larger than the server accepts.",
                ),
                send,
            )
            return
        # A long poll is not admitted: it mostly sleeps, and a slot held while it sleeps would
        # starve the tenant's other calls (1,000 waiting pulls are a normal load). A caller
        # not verifiable here (cold cache, bad key) waits in one shared line.
        tenant = None
        if op is not None and not _long_poll(op, body):
            tenant = caller.tenant_id if caller is not None else ""
        if tenant is not None:
            shed = await self.admission.acquire(tenant)
            if shed is not None:
                response = shed
            else:
                response = None
                try:
                    response = await self._respond(scope, receive, match, body)
                finally:
                    if response is not None and response.status_code == 503:
                        # A backing service is down: the tenant's queued calls would wait
                        # for a slot and then for the same timeout, so they get this answer
                        # now (before release would hand the slot to one of them).
                        self.admission.shed(tenant, response)
                    self.admission.release(tenant)
        else:
            response = await self._respond(scope, receive, match, body)
        if response is None:
            return
        if response.status_code == 429 and caller is not None and op is not None:
            self.refusals.remember(
                op, caller, scope, started, body, 429, _encoded(response), response.content
            )
        await self._send(response, send)
        # No response.close(): like request_started, the request_finished signal is Django's
        # handler's business; its receivers tidy up database connections, which a data-plane
        # request never opens on the event loop.

    async def _respond(
        self, scope: Scope, receive: Receive, match: ResolverMatch, body: bytes
    ) -> HttpResponse | None:
        """The view's response with the headers added; None when the client left a long poll."""
        request = ASGIRequest(scope, io.BytesIO(body))
        request.resolver_match = match
        response = self.headers.before(request)
        if response is None and not getattr(getattr(match.func, "cls", None), "may_wait", False):
            response = await match.func(request, *match.args, **match.kwargs)
        elif response is None:
            # A view that may wait (a long poll) is cancelled when its client goes away.
            view = asyncio.ensure_future(match.func(request, *match.args, **match.kwargs))
            gone = asyncio.ensure_future(self._until_disconnect(receive))
            await asyncio.wait((view, gone), return_when=asyncio.FIRST_COMPLETED)
            if not view.done():
                view.cancel()
                await asyncio.gather(view, return_exceptions=True)
                return None
            gone.cancel()
            response = view.result()
        return self.headers.after(request, response)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    @staticmethod
    async def _send(response: HttpResponse, send: Send) -> None:
        headers = _encoded(response)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": response.content})


def _encoded(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's header fields as ASGI wants them."""
    return [(name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]


def _long_poll(op: str | None, body: bytes) -> bool:
    """Whether a pull asks to wait (``wait_seconds`` > 0); a malformed body does not."""
    if op != PULL or b"wait_seconds" not in body:
        return False
    try:
        wait = orjson.loads(body).get("wait_seconds")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(wait, int) and not isinstance(wait, bool) and wait > 0
