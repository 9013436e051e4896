"""The console's formatting filters."""

from __future__ import annotations

import pytest

from console.templatetags.console_tags import duration


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (90, "1 min 30 s"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (86400 + 300, "1 d"),
        (345600, "4 d"),
        (604800, "7 d"),
        (1209600, "14 d"),
        (None, ""),
        ("n/a", "n/a"),
    ],
)
def test_duration_is_compact(seconds: object, shown: str) -> None:
    """At most two units, largest first; a zero middle unit ends the text."""
    assert duration(seconds) == shown
