"""The engine's Lua scripts: loaded into Redis once, then called by SHA.

Each ``.lua`` file beside this module documents its KEYS and ARGV at its top; ``_lib.lua``
(shared helpers) is prepended to each. A call is one EVALSHA round trip; only after Redis
lost its script cache (a restart, a failover) does it cost a SCRIPT LOAD and a retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import NoScriptError

from openplatform.redis_client import get_script_lane

_HERE = Path(__file__).parent / "lua"
_LIB = (_HERE / "_lib.lua").read_text()

Arg = str | bytes | int | float


class Script:
    """One Lua script. ``run`` (sync) and ``arun`` (async) take KEYS and ARGV."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _LIB + "\n" + (_HERE / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def run(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run on the event loop's script lane (see openplatform.redis_client.ScriptLane)."""
        lane = get_script_lane()
        try:
            return await lane.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await lane.call("SCRIPT", "LOAD", self.source)
            return await lane.call("EVALSHA", self.sha, len(keys), *keys, *args)


PUBLISH = Script("publish")
PULL = Script("pull")
SETTLE = Script("settle")
PURGE = Script("purge")
REDRIVE = Script("redrive")
SEEK = Script("seek")
DUE = Script("due")
DROP = Script("drop")
