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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: ResolverMatch = scope["openplatform.match"]
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
                return
            gone.cancel()
            response = view.result()
        response = self.headers.after(request, response)
        await self._send(response, send)
        # No response.close(): like request_started, the request_finished signal is Django's
        # handler's business; its receivers tidy up database connections, which a data-plane
        # request never opens on the event loop.

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
        headers = [
            (name.encode("latin1"), value.encode("latin1")) for name, value in response.items()
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": response.content})
