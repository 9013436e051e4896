"""Background work of the message engine, run by Celery beat (see CELERY_BEAT_SCHEDULE).

Every task is idempotent and safe to overlap with itself: the work is done by Lua scripts or
by upserts, so a retried or doubled run changes nothing more."""

from __future__ import annotations

from celery import shared_task

from queues import services


@shared_task(name="queues.housekeeping", time_limit=60, soft_time_limit=50, ignore_result=True)
def housekeeping() -> None:
    """Due delayed messages into their streams; expired leases to backoff or dead letters."""
    services.housekeeping_all()


@shared_task(name="queues.retention_trim", time_limit=300, soft_time_limit=270, ignore_result=True)
def retention_trim() -> int:
    """Drop messages older than each topic's and queue's retention."""
    return services.retention_trim_all()


@shared_task(
    name="queues.snapshot_positions", time_limit=300, soft_time_limit=270, ignore_result=True
)
def snapshot_positions() -> int:
    """Copy every consumer group's position to PostgreSQL (for streams_rebuild)."""
    return services.positions_snapshot_all()


@shared_task(name="queues.sample_metrics", time_limit=120, soft_time_limit=100, ignore_result=True)
def sample_metrics() -> int:
    """Write this minute's traffic of every resource for the console's charts; trim old rows."""
    return services.metrics_sample_all()
