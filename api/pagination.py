"""Cursor pagination for lists: ``?limit=1..200`` (default 50) and ``?cursor=``; the answer is
``{"results": [...], "next": "<cursor or null>"}``. Cursors are opaque keyset positions, so a
page is one index range scan however deep it is, and rows added meanwhile are not skipped."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.db.models import Model, Q, QuerySet

from openplatform.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {maximum}.",
            errors=[{"field": "limit", "detail": "Not an integer."}],
        ) from exc
    if not 1 <= value <= maximum:
        raise InvalidRequest(
            f"limit must be from 1 to {maximum}.",
            errors=[{"field": "limit", "detail": "Out of range."}],
        )
    return value


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values, default=str)).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest(
            "Invalid cursor.", errors=[{"field": "cursor", "detail": "Invalid."}]
        ) from exc
    if not isinstance(values, list) or len(values) != size:
        raise InvalidRequest("Invalid cursor.", errors=[{"field": "cursor", "detail": "Invalid."}])
    return values


def paginate(
    queryset: QuerySet,
    params: Any,
    *,
    ordering: Sequence[str],
    serialize: Callable[[Model], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``queryset`` ordered by ``ordering`` (fields, '-' for descending; the last
    one must be unique). ``params`` is the request's query dict."""
    limit = parse_limit(params.get("limit"))
    fields = [name.lstrip("-") for name in ordering]
    queryset = queryset.order_by(*ordering)
    cursor = params.get("cursor")
    if cursor:
        values = _decode(cursor, len(fields))
        condition = Q()
        for depth, name in enumerate(ordering):
            field = fields[depth]
            op = "lt" if name.startswith("-") else "gt"
            step = Q(**{f"{field}__{op}": values[depth]})
            for prior in range(depth):
                step &= Q(**{fields[prior]: values[prior]})
            condition |= step
        queryset = queryset.filter(condition)
    rows = list(queryset[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = _encode([getattr(last, field) for field in fields])
    return {"results": [serialize(row) for row in rows], "next": next_cursor}
