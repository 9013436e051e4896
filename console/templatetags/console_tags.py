"""Small formatting filters for the console's templates."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


@register.filter
def duration(seconds: Any) -> str:
    """A compact length of time with at most two units: 604800 → "7 d", 5400 → "1 h 30 min",
    45 → "45 s". Anything that is not a number comes back unchanged."""
    try:
        left = int(seconds)
    except (TypeError, ValueError):
        return "" if seconds is None else str(seconds)
    if left <= 0:
        return "0 s"
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {unit}")
        elif parts:
            break  # "1 d 0 h 5 min" reads worse than "1 d"
        if len(parts) == 2:
            break
    return " ".join(parts)
