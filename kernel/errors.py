"""The platform's errors. Domain code raises these; the API edge turns each into an
``application/problem+json`` answer with the status and machine code of API.md."""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    """Base class: ``status`` and ``code`` are the HTTP status and the problem's ``code``."""

    status = 400
    code = "invalid_request"
    title = "Invalid request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.retry_after = retry_after
        super().__init__(self.detail)


class InvalidRequest(PlatformError):
    status, code, title = 400, "invalid_request", "Invalid request"


class Unauthenticated(PlatformError):
    status, code, title = 401, "unauthenticated", "Authentication required"


class Forbidden(PlatformError):
    status, code, title = 403, "forbidden", "Forbidden"


class QuotaExceeded(PlatformError):
    status, code, title = 403, "quota_exceeded", "Quota exceeded"


class NotFound(PlatformError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(PlatformError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(PlatformError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(PlatformError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(PlatformError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RateLimited(PlatformError):
    status, code, title = 429, "rate_limited", "Too many requests"


class Unavailable(PlatformError):
    status, code, title = 503, "unavailable", "Service unavailable"
