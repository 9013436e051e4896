"""Celery configuration: beat can send every task on its schedule."""

from __future__ import annotations

import pytest

from openplatform.celery import app

SCHEDULE = app.conf.beat_schedule


def test_the_schedule_names_every_background_task() -> None:
    """Beat runs the engine's, the tenants' and billing's background work."""
    assert sorted(entry["task"] for entry in SCHEDULE.values()) == [
        "billing.run_previous_month",
        "queues.housekeeping",
        "queues.retention_trim",
        "queues.sample_metrics",
        "queues.snapshot_positions",
        "tenants.flush_key_last_used",
        "tenants.usage_rollup",
        "tenants.usage_trim",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SCHEDULE))
def test_beat_can_send_each_scheduled_task(name: str) -> None:
    """apply_async (what beat calls) accepts each task: Celery refuses to send one whose soft
    time limit exceeds its hard limit, which once stopped beat from sending any of them.
    Each task has its own soft limit below its hard limit."""
    app.loader.import_default_modules()  # the worker's task discovery
    task = app.tasks[SCHEDULE[name]["task"]]

    assert 0 < task.soft_time_limit < task.time_limit
    task.apply_async()  # eager in the test settings: sent, checked and run in-process
