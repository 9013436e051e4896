"""Lua scripts: loaded into Redis once, then called by SHA.

Every script is a ``.lua`` file in its package's ``lua/`` folder that documents its KEYS and
ARGV at its top; a package builds its :class:`Script` instances in one place (the engine's in
``queues.engine.scripts``). A call is one EVALSHA round trip; only after Redis lost its script
cache (a restart, a failover) does it cost a SCRIPT LOAD and a retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from kernel.redis_client import get_script_lane

Arg = str | bytes | int | float


class Script:
    """One Lua script: ``run`` (sync), ``arun`` (the async script lane) and ``queue`` (into a
    pipeline) take KEYS and ARGV. ``prelude`` (shared helpers) is prepended to the file."""

    def __init__(self, path: Path, *, prelude: str = "") -> None:
        self.name = path.stem
        body = path.read_text()
        self.source = prelude + "\n" + body if prelude else body
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    @property
    def script(self) -> str:
        """The source, under the name redis-py's pipeline reads when it loads scripts."""
        return self.source

    def run(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run on the event loop's script lane (see kernel.redis_client.ScriptLane):
        exactly one EVALSHA while Redis has the script."""
        lane = get_script_lane()
        try:
            return await lane.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await lane.call("SCRIPT", "LOAD", self.source)
            return await lane.call("EVALSHA", self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to ``pipe``. The pipeline's ``execute`` first makes sure Redis has every
        script queued on it (one SCRIPT EXISTS, a SCRIPT LOAD for any it lost), so no call in
        it fails with NOSCRIPT and nothing else in the pipeline is ever sent twice."""
        pipe.scripts.add(self)  # type: ignore[arg-type]  # redis-py reads .sha and .script
        pipe.evalsha(self.sha, len(keys), *keys, *args)
