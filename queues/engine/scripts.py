"""The engine's Lua scripts (see kernel.redis_scripts for how they are called).

Each ``.lua`` file in ``lua/`` beside this module documents its KEYS and ARGV at its top;
``_lib.lua`` (shared helpers) is prepended to each.
"""

from __future__ import annotations

from pathlib import Path

from kernel.redis_scripts import Script

_HERE = Path(__file__).parent / "lua"
_LIB = (_HERE / "_lib.lua").read_text()


def _engine_script(name: str) -> Script:
    return Script(_HERE / f"{name}.lua", prelude=_LIB)


PUBLISH = _engine_script("publish")
PULL = _engine_script("pull")
SETTLE = _engine_script("settle")
PURGE = _engine_script("purge")
REDRIVE = _engine_script("redrive")
SEEK = _engine_script("seek")
DUE = _engine_script("due")
DROP = _engine_script("drop")
DELETE_IDS = _engine_script("delete_ids")
TRIM = _engine_script("trim")
