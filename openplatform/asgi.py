"""ASGI entry point: gunicorn (uvicorn workers) serves this in every environment.

Requests that carry ``Authorization: Bearer`` (the REST API's clients) skip the console's
session machinery: POSTs to the async data-plane views go to api.asgi.DataPlaneApp (served on
the event loop alone), other API requests to api.asgi.ApiASGIHandler. Everything else (the
console, the admin, session-authenticated API calls, health probes) goes through Django's full
middleware stack.
"""

import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application
from django.urls import Resolver404, ResolverMatch, resolve

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
# In development (DEBUG: `./dev up`) the web processes serve the static files too (the
# admin's styles, Swagger UI's scripts), from the apps' static folders as runserver does. In
# production nginx serves the collected files (deploy/nginx.conf), and this never runs:
# Django's static view is meant for development only.
static_application = ASGIStaticFilesHandler(django_application)


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
    if settings.DEBUG:  # /static/... from the apps' folders, everything else to Django
        await static_application(scope, receive, send)
        return
    await django_application(scope, receive, send)
