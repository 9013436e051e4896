"""Background work for tenants and keys."""

from __future__ import annotations

from pathlib import Path

from celery import shared_task

from kernel.redis_client import get_redis
from kernel.redis_scripts import Script
from tenants import services
from tenants.principals import LAST_USED_KEY

_DRAIN = Script(Path(__file__).parent / "lua" / "drain.lua")


@shared_task(
    name="tenants.flush_key_last_used", time_limit=60, soft_time_limit=50, ignore_result=True
)
def flush_key_last_used() -> int:
    """Copy the last-used times the data plane noted in Redis into PostgreSQL (each key at
    most once a minute), taking and clearing them in one atomic step."""
    flat = _DRAIN.run(get_redis(), [LAST_USED_KEY], [])
    updates = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return services.key_flush_last_used(updates=updates) if updates else 0


@shared_task(name="tenants.usage_rollup", time_limit=300, soft_time_limit=270, ignore_result=True)
def usage_rollup() -> int:
    """Copy each tenant's hourly traffic counters from Redis into UsageRecord rows, then
    email the quota alerts the new totals call for (each once per month and share; one
    whose email failed is tried again by the next run). Returns the rows written."""
    written = services.usage_rollup()
    services.usage_alerts()
    return written


@shared_task(name="tenants.usage_trim", time_limit=600, soft_time_limit=540, ignore_result=True)
def usage_trim() -> int:
    """Delete the hourly usage rows older than the months kept (settings.USAGE_KEEP_MONTHS
    before the current one). Returns how many went."""
    return services.usage_trim()
