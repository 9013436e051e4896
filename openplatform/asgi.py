"""ASGI entry point: gunicorn (uvicorn workers) serves this in every environment.

Requests that carry ``Authorization: Bearer`` (the REST API's clients) skip the console's
session machinery: POSTs to the async data-plane views go to api.asgi.DataPlaneApp (served on
the event loop alone), other API requests to api.asgi.ApiASGIHandler. Everything else (the
console, the admin, session-authenticated API calls, health probes) goes through Django's full
middleware stack.
"""

import os

from asgiref.sync import iscoroutinefunction
from django.core.asgi import get_asgi_application
from django.urls import Resolver404, resolve

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")

django_application = get_asgi_application()

from api.asgi import ApiASGIHandler, DataPlaneApp  # noqa: E402 - needs the apps loaded above

api_application = ApiASGIHandler()
data_plane_application = DataPlaneApp()


def _has_bearer(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value[:7].lower() == b"bearer "
    return False


async def application(scope: dict, receive: object, send: object) -> None:
    """Route each request to the lightest handler that can serve it."""
    if scope["type"] == "http" and _has_bearer(scope):
        if scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            try:
                match = resolve(path[len(root) :] if root and path.startswith(root) else path)
            except Resolver404:
                match = None
            if match is not None and iscoroutinefunction(match.func):
                scope = {**scope, "openplatform.match": match}
                await data_plane_application(scope, receive, send)
                return
        await api_application(scope, receive, send)
        return
    await django_application(scope, receive, send)
