"""Scripts called through a pipeline survive Redis losing its script cache."""

from __future__ import annotations

from kernel.redis_client import get_redis
from queues.engine import scripts


def test_a_pipeline_loads_the_scripts_redis_lost() -> None:
    """After SCRIPT FLUSH, a pipeline holding script calls loads the scripts first and every
    call runs once: the other commands in it are not sent twice."""
    redis = get_redis()
    redis.script_flush()
    pipe = redis.pipeline(transaction=False)
    pipe.incr("op:test:counter")
    scripts.DUE.queue(pipe, ["op:test:s", "op:test:delay"], [0])
    results = pipe.execute()
    assert results[0] == 1
    assert redis.get("op:test:counter") == b"1"
    assert redis.script_exists(scripts.DUE.sha) == [True]
