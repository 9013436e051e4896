"""ASGI entry point: gunicorn (uvicorn workers) serves this in every environment.

Requests that carry ``Authorization: Bearer`` (the REST API's clients) skip the console's
session machinery: POSTs to the async data-plane views go to api.asgi.DataPlaneApp (served on
the event loop alone), other API requests to api.asgi.ApiASGIHandler. Static files
(``/static/…`` and ``/favicon.ico``) are answered by servestatic right here, on the event loop
(file reads in a thread), before any Django middleware. Everything else (the console, the admin,
session-authenticated API calls, health probes) goes through Django's full middleware stack.
"""

import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, ResolverMatch, resolve
from servestatic.asgi import FileServerASGI  # type: ignore[import-untyped]
from servestatic.middleware import ServeStaticMiddleware  # type: ignore[import-untyped]
from servestatic.utils import run_async_in_thread  # type: ignore[import-untyped]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")

#: What the ASGI server passes, typed so that Django's handlers and DataPlaneApp both accept it
#: (Django's send takes any mapping, DataPlaneApp's receive returns a dict).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

django_application = get_asgi_application()

from api.asgi import ApiASGIHandler, DataPlaneApp  # noqa: E402 - needs the apps loaded above

api_application = ApiASGIHandler()
data_plane_application = DataPlaneApp()


async def _no_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("static_files only finds files; application() routes everything else")


# servestatic's Django configuration, used for its file table only (never as a middleware: a
# middleware serves from inside Django's handler, and the sync WhiteNoise middleware once held
# up long polls). DEBUG: the finders' files (the apps' static folders and static/), looked up
# on every request so edits show at once. Otherwise: the collected files of the manifest, the
# fingerprinted names cached for ten years, with their gzip and brotli variants.
static_files = ServeStaticMiddleware(_no_view)
STATIC_PREFIX: str = static_files.static_prefix
#: Browsers ask for /favicon.ico whatever the page links; it answers the brand mark, under its
#: plain name (a short cache), so a new mark reaches them.
FAVICON_URL = f"{STATIC_PREFIX}favicon.svg"


async def _static_file(path: str) -> Any:
    """servestatic's response maker for ``path``, or None when it names no static file."""
    if static_files.autorefresh:
        return await run_async_in_thread(static_files.find_file, path)
    return static_files.files.get(path)


@functools.lru_cache(maxsize=8192)
def _resolve(path: str) -> ResolverMatch | None:
    """URL resolution of a data-plane path, remembered: the same few thousand queue paths
    come again and again, and resolving walks every pattern of the API."""
    try:
        return resolve(path)
    except Resolver404:
        return None


def _has_bearer(scope: Scope) -> bool:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            return value[:7].lower() == b"bearer "
    return False


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Route each request to the lightest handler that can serve it."""
    if scope["type"] == "http" and _has_bearer(scope):
        if scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            match = _resolve(path[len(root) :] if root and path.startswith(root) else path)
            if match is not None and iscoroutinefunction(match.func):
                scope = {**scope, "openplatform.match": match}
                await data_plane_application(scope, receive, send)
                return
        await api_application(scope, receive, send)
        return
    if scope["type"] == "http":
        url: str = scope["path"]
        if url.startswith(STATIC_PREFIX) or url == "/favicon.ico":
            found = await _static_file(FAVICON_URL if url == "/favicon.ico" else url)
            if found is not None:
                await FileServerASGI(found)(scope, receive, send)
                return
    await django_application(scope, receive, send)
