"""One place that turns every error into ``application/problem+json`` (RFC 9457).

DRF views route exceptions here through ``EXCEPTION_HANDLER``; the async data-plane views
and Django's own 400/403/404/500 handlers call :func:`problem_response` directly, so a client
sees the same shape whatever failed.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
import redis
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf

from kernel import errors

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:openplatform:problem:"
UNAVAILABLE_RETRY_AFTER = 5


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors_: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors_:
        body["errors"] = errors_
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors_: list[dict[str, Any]] | None = None,
    retry_after: int | None = None,
) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(problem_body(status, code, title, detail, errors_)),
        status=status,
        content_type="application/problem+json",
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="openplatform"'
    return response


def platform_error_response(exc: errors.PlatformError) -> HttpResponse:
    return problem_response(
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        errors_=exc.errors,
        retry_after=exc.retry_after,
    )


def _flatten_validation(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    """DRF's nested ValidationError detail → [{"field": "a.b", "detail": "..."}]."""
    out: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            # str(): a ListField's item errors are keyed by int index, and index 0 is falsy.
            name = str(key) if key != "non_field_errors" else ""
            out += _flatten_validation(
                value, f"{prefix}.{name}" if prefix and name else prefix or name
            )
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            for item in detail:
                entry: dict[str, Any] = {"detail": str(item)}
                if prefix:
                    entry["field"] = prefix
                out.append(entry)
        else:
            for index, item in enumerate(detail):
                out += _flatten_validation(item, f"{prefix}[{index}]" if prefix else f"[{index}]")
    else:
        entry = {"detail": str(detail)}
        if prefix:
            entry["field"] = prefix
        out.append(entry)
    return out


def to_platform_error(exc: BaseException) -> errors.PlatformError | None:
    """Map any known exception to a PlatformError; None for a genuine bug (→ 500)."""
    if isinstance(exc, errors.PlatformError):
        return exc
    if isinstance(exc, drf.ValidationError):
        items = _flatten_validation(exc.detail)
        first = items[0] if items else {"detail": "Invalid request."}
        where = f"{first['field']}: " if first.get("field") else ""
        return errors.InvalidRequest(f"{where}{first['detail']}", errors=items)
    if isinstance(exc, drf.UnsupportedMediaType):
        return errors.UnsupportedMediaType("Send the request body as application/json.")
    if isinstance(exc, drf.ParseError):
        return errors.InvalidRequest(str(exc.detail))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return errors.Unauthenticated(str(exc.detail))
    if isinstance(exc, drf.PermissionDenied | PermissionDenied):
        return errors.Forbidden(str(getattr(exc, "detail", "")) or None)
    if isinstance(exc, drf.NotFound | Http404):
        return errors.NotFound()
    if isinstance(exc, drf.MethodNotAllowed):
        return errors.MethodNotAllowed(str(exc.detail))
    if isinstance(exc, drf.Throttled):
        wait = exc.wait  # type: ignore[attr-defined]  # set by Throttled.__init__, not in the stubs
        return errors.RateLimited(str(exc.detail), retry_after=int(wait or 1))
    if isinstance(exc, RequestDataTooBig):
        return errors.PayloadTooLarge("The request body is larger than the server accepts.")
    if isinstance(exc, SuspiciousOperation):
        return errors.InvalidRequest(str(exc) or "Bad request.")
    if isinstance(exc, drf.APIException):
        error = errors.PlatformError(str(exc.detail))
        error.status = exc.status_code
        error.code = exc.default_code
        error.title = exc.default_detail if isinstance(exc.default_detail, str) else "Error"
        return error
    if isinstance(
        exc,
        redis.ConnectionError
        | redis.TimeoutError
        | OperationalError
        | InterfaceError
        | psycopg.OperationalError,
    ):
        logger.warning("backing service unavailable: %r", exc)
        return errors.Unavailable(
            "A backing service is unavailable; try again shortly.",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )
    if isinstance(exc, DatabaseError):
        return None
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: problem+json for everything we understand; None (→ a 500
    through Django's handler500, also problem+json) for bugs."""
    error = to_platform_error(exc)
    if error is None:
        return None
    return platform_error_response(error)


def _wants_problem(request: HttpRequest) -> bool:
    return request.path.startswith(("/v1", "/healthz", "/readyz"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    error = to_platform_error(exception) if isinstance(exception, RequestDataTooBig) else None
    if error is not None:
        return platform_error_response(error)
    return problem_response(400, "invalid_request", "Invalid request", "Bad request.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _wants_problem(request):
        from django.views.defaults import permission_denied as html

        # The stubs demand an exception; Django's view takes None as well (it renders its str).
        return html(request, exception)  # type: ignore[arg-type]
    return problem_response(403, "forbidden", "Forbidden", "Forbidden.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _wants_problem(request):
        from django.views.defaults import page_not_found as html

        return html(request, exception)
    return problem_response(404, "not_found", "Not found", "No such resource.")


def server_error(request: HttpRequest) -> HttpResponse:
    if not _wants_problem(request):
        from django.views.defaults import server_error as html

        return html(request)
    return problem_response(
        500, "internal_error", "Internal server error", "An unexpected error occurred."
    )
