"""Background work for billing."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from billing import services
from billing.models import BillingRun
from billing.pricing import month_start, previous_month

#: How long after a month ends it is billed: the usage roll-up copies the data plane's
#: counters to PostgreSQL every minute or so, and the month's last hour must be in first.
BILLING_GRACE = timedelta(hours=2)
ACTOR = "system:billing"


@shared_task(
    name="billing.run_previous_month", time_limit=3600, soft_time_limit=3500, ignore_result=True
)
def run_previous_month() -> str:
    """Bill the month before the current one (once it ended BILLING_GRACE ago) unless its run
    has finished; idempotent, so a retry or a second worker changes nothing already issued."""
    month = previous_month(month_start((timezone.now() - BILLING_GRACE).date()))
    if BillingRun.objects.filter(month=month, finished_at__isnull=False).exists():
        return f"{month:%Y-%m} already billed"
    result = services.billing_run(month=month, actor=ACTOR)
    return f"{month:%Y-%m} {result.outcomes}"
