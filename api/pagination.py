"""Cursor pagination for lists: ``?limit=1..200`` (default 50) and ``?cursor=``; the answer is
``{"results": [...], "next": "<cursor or null>"}``. Cursors are opaque keyset positions, so a
page is one index range scan however deep it is, and rows added meanwhile are not skipped."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from django.core.exceptions import ValidationError
from django.db.models import Field, IntegerField, Model, Q, QuerySet
from django.utils import timezone

from kernel.errors import InvalidRequest
from kernel.limits import DEFAULT_PAGE, MAX_PAGE

_M = TypeVar("_M", bound=Model)

DEFAULT_LIMIT = DEFAULT_PAGE
MAX_LIMIT = MAX_PAGE
#: An integer as a query parameter: ASCII digits only (int() would also take " 1", "1_0" and
#: Unicode digits such as "\u0661").
DECIMAL = re.compile(r"-?[0-9]{1,18}")


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """``?limit=``: absent is ``default``; anything but an integer from 1 to ``maximum`` (an
    empty value too) is a 400 naming it."""
    if raw is None:
        return default
    if not DECIMAL.fullmatch(raw):
        raise InvalidRequest(
            f"limit must be an integer from 1 to {maximum}.",
            errors=[{"field": "limit", "detail": "Not an integer."}],
        )
    value = int(raw)
    if not 1 <= value <= maximum:
        raise InvalidRequest(
            f"limit must be from 1 to {maximum}.",
            errors=[{"field": "limit", "detail": "Out of range."}],
        )
    return value


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values, default=str)).decode().rstrip("=")


def _invalid_cursor() -> InvalidRequest:
    return InvalidRequest("Invalid cursor.", errors=[{"field": "cursor", "detail": "Invalid."}])


def _ordering_fields(model: type[Model], names: Sequence[str]) -> list[Field[Any, Any]]:
    """The model fields a cursor's values are checked by. A reverse relation cannot hold a
    cursor value (it has no column and no clean()), so ordering by one is a programming error."""
    fields = []
    for name in names:
        field = model._meta.get_field(name)
        if not isinstance(field, Field):
            raise TypeError(f"{model.__name__} cannot be paginated by {name!r}: not a column")
        fields.append(field)
    return fields


def _decode(cursor: str, fields: Sequence[Field[Any, Any]]) -> list[Any]:
    """The keyset position a cursor holds, one value per ordering field, each checked by its
    model field (type, range, validators) so that nothing a client crafted reaches the query
    unless it could have come from a row: any other cursor is a 400 naming ``cursor``."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:  # binascii.Error, orjson.JSONDecodeError, non-ASCII text
        raise _invalid_cursor() from exc
    if not isinstance(values, list) or len(values) != len(fields):
        raise _invalid_cursor()
    out = []
    for field, value in zip(fields, values, strict=True):
        # _encode writes integers for integer fields (ids), strings for the others (names,
        # times, UUIDs), never null.
        expected = int if isinstance(field, IntegerField) else str
        if isinstance(value, bool) or not isinstance(value, expected):
            raise _invalid_cursor()
        if isinstance(value, str) and "\x00" in value:  # PostgreSQL refuses NUL in text
            raise _invalid_cursor()
        try:
            clean = field.clean(value, None)
        except (ValidationError, TypeError, ValueError, OverflowError) as exc:
            raise _invalid_cursor() from exc
        if isinstance(clean, datetime) and timezone.is_naive(clean):
            raise _invalid_cursor()
        out.append(clean)
    return out


def paginate(
    queryset: QuerySet[_M],
    params: Any,
    *,
    ordering: Sequence[str],
    serialize: Callable[[_M], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``queryset`` ordered by ``ordering`` (fields, '-' for descending; the last
    one must be unique). ``params`` is the request's query dict."""
    limit = parse_limit(params.get("limit"))
    fields = [name.lstrip("-") for name in ordering]
    queryset = queryset.order_by(*ordering)
    cursor = params.get("cursor")
    if cursor is not None:
        values = _decode(cursor, _ordering_fields(queryset.model, fields))
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
