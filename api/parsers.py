"""JSON in, with orjson: fast, strict, and every failure a clear 400."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from openplatform.errors import InvalidRequest, PayloadTooLarge


def loads(raw: bytes) -> Any:
    """Decode a JSON request body; raises InvalidRequest with the parser's message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON: {exc}") from exc


class FastJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            raw = stream.read() if stream is not None else b""
        except RequestDataTooBig as exc:
            raise PayloadTooLarge("The request body is larger than the server accepts.") from exc
        return loads(raw) if raw else {}
