"""The one way settings read the environment.

Every variable goes through :func:`env`, so the README's configuration table and the code
agree, a wrong value fails at start-up with the variable's name in the message, and a
required production secret with no value stops the process instead of running insecurely.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _to_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _to_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


_CASTS: dict[type, Callable[[str], Any]] = {
    bool: _to_bool,
    int: int,
    float: float,
    str: str,
    list: _to_list,
}


def env(name: str, default: T = _MISSING, *, cast: type | None = None) -> T:
    """Read ``name`` from the environment, converted to ``cast`` (or the default's type).

    Raises ImproperlyConfigured when the variable is unset and no default is given, or when
    its value cannot be converted.
    """
    raw = os.environ.get(name)
    if raw is None:
        if default is _MISSING:
            raise ImproperlyConfigured(f"The environment variable {name} is required.")
        return default
    kind = cast or (type(default) if default is not _MISSING and default is not None else str)
    try:
        value: T = _CASTS[kind](raw)
    except (KeyError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a valid {kind.__name__}: {exc}") from exc
    return value
