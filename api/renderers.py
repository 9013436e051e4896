"""JSON out, with orjson. Times are RFC 3339 UTC with a Z, as API.md requires."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import BaseRenderer

OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=OPTIONS, default=str)


class FastJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        return dumps(data)
