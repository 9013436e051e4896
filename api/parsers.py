"""JSON in, with orjson: fast, strict, and every failure a clear 400."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from openplatform.errors import InvalidRequest, PayloadTooLarge


def loads(raw: bytes) -> Any:
    """Decode a JSON request body; raises InvalidRequest with the parser's message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON: {exc}") from exc


def read_limited(stream: Any) -> bytes:
    """The whole body, or PayloadTooLarge once it passes DATA_UPLOAD_MAX_MEMORY_SIZE.

    DRF hands parsers the request itself as the stream, and reading it directly skips the
    limit Django applies in ``HttpRequest.body``; so the limit is applied here, reading at
    most one byte past it.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read()
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge("The request body is larger than the server accepts.")
    return b"".join(chunks)


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            raw = read_limited(stream) if stream is not None else b""
        except RequestDataTooBig as exc:
            raise PayloadTooLarge("The request body is larger than the server accepts.") from exc
        return loads(raw) if raw else {}
