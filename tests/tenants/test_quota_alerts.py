"""Quota alerts: when a tenant's rolled-up use of a monthly quota reaches 80 % and then 100 %
of the limit that holds for it, its owners and admins get one email each time, once per
month, audited as quota.alert; a failed email is tried again by the next run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.core import mail

from kernel.redis_client import get_redis
from kernel.redis_keys import usage_hour_field, usage_key
from tenants.models import AuditEvent, QuotaAlert, Role
from tenants.services import quota_alert_send, usage_alerts, usage_alerts_due, usage_rollup
from tenants.tasks import usage_rollup as usage_rollup_task
from tests.factories import TenantCtx, make_member, make_plan

pytestmark = pytest.mark.django_db

DEC = datetime(2026, 12, 10, 9, 30, tzinfo=UTC)
JAN = datetime(2027, 1, 3, 9, 30, tzinfo=UTC)


@pytest.fixture
def limited(acme: TenantCtx) -> TenantCtx:
    """Acme on a plan of 1000 messages a month, with an admin, a developer and a viewer
    beside its owner."""
    make_plan(tenant=acme.tenant, monthly_messages=1000)
    make_member(tenant=acme.tenant, email="ada@acme.test", role=Role.ADMIN)
    make_member(tenant=acme.tenant, email="dev@acme.test", role=Role.DEVELOPER)
    make_member(tenant=acme.tenant, email="vic@acme.test", role=Role.VIEWER)
    return acme


def publish_counted(ctx: TenantCtx, at: datetime, n: int) -> None:
    """What the publish script counts for ``n`` messages at ``at``."""
    field = usage_hour_field(int(at.timestamp() * 1000), "published")
    get_redis().hincrby(usage_key(str(ctx.tenant.id)), field, n)


def run(at: datetime) -> list[tuple[str, str, int]]:
    """One roll-up at ``at`` and the alerts after it: (quota, period, percent) sent."""
    usage_rollup(now=at)
    return [(a.quota, a.period, a.percent) for a in usage_alerts(now=at)]


def alert_events(ctx: TenantCtx) -> list[dict[str, Any]]:
    return [
        {"actor": e.actor, "target": e.target_id, **e.data}
        for e in AuditEvent.objects.for_tenant(ctx.tenant)
        .filter(action="quota.alert")
        .order_by("id")
    ]


def test_one_email_at_80_one_at_100_none_again_then_again_next_month(limited: TenantCtx) -> None:
    """799 of 1000: nothing. 800: one email to the owner and the admin (not the developer
    nor the viewer). 950: nothing more. 1000: the 100 % email. Further runs in December:
    nothing. In January the count starts again and 800 sends January's 80 % email."""
    publish_counted(limited, DEC, 799)
    assert run(DEC) == []
    assert mail.outbox == []

    publish_counted(limited, DEC, 1)
    assert run(DEC) == [("monthly_messages", "2026-12", 80)]
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == ["ada@acme.test", "owner@acme.test"]
    assert email.subject == "Acme: 80% of a monthly quota used in 2026-12"
    assert "Messages published per month: 800 of 1000 messages" in email.body
    assert "Acme has used 80% of a monthly quota in 2026-12 (UTC)." in email.body

    publish_counted(limited, DEC, 150)
    assert run(DEC) == []
    assert len(mail.outbox) == 1

    publish_counted(limited, DEC, 50)
    assert run(DEC) == [("monthly_messages", "2026-12", 100)]
    assert len(mail.outbox) == 2
    assert mail.outbox[1].subject == "Acme: 100% of a monthly quota used in 2026-12"
    assert "Messages published per month: 1000 of 1000 messages" in mail.outbox[1].body
    assert "The limit is reached" in mail.outbox[1].body

    assert run(DEC) == []
    assert run(DEC) == []
    assert len(mail.outbox) == 2

    publish_counted(limited, JAN, 800)
    assert run(JAN) == [("monthly_messages", "2027-01", 80)]
    assert len(mail.outbox) == 3
    assert mail.outbox[2].subject == "Acme: 80% of a monthly quota used in 2027-01"

    assert sorted(
        QuotaAlert.objects.for_tenant(limited.tenant).values_list("quota", "period", "percent")
    ) == [
        ("monthly_messages", "2026-12", 80),
        ("monthly_messages", "2026-12", 100),
        ("monthly_messages", "2027-01", 80),
    ]
    assert alert_events(limited) == [
        {
            "actor": "system:metering",
            "target": "monthly_messages",
            "period": period,
            "percent": percent,
            "used": used,
            "limit": 1000,
            "recipients": 2,
        }
        for period, percent, used in (
            ("2026-12", 80, 800),
            ("2026-12", 100, 1000),
            ("2027-01", 80, 800),
        )
    ]


def test_a_jump_past_both_steps_sends_the_100_alert_alone(limited: TenantCtx) -> None:
    """From nothing to the limit between two runs: one email, the 100 % one."""
    publish_counted(limited, DEC, 1000)

    assert run(DEC) == [("monthly_messages", "2026-12", 100)]
    assert [m.subject for m in mail.outbox] == ["Acme: 100% of a monthly quota used in 2026-12"]
    assert run(DEC) == []
    assert len(mail.outbox) == 1


def test_the_effective_limit_counts(limited: TenantCtx) -> None:
    """An operator's override replaces the plan's limit: 400 messages is 80 % of an override
    of 500 (and 40 % of the plan's 1000); an override to unlimited sends nothing at 1000."""
    publish_counted(limited, DEC, 400)
    limited.tenant.quota_overrides = {"monthly_messages": 500}
    limited.tenant.save(update_fields=["quota_overrides"])

    assert run(DEC) == [("monthly_messages", "2026-12", 80)]
    assert "400 of 500 messages" in mail.outbox[0].body

    limited.tenant.quota_overrides = {"monthly_messages": None}
    limited.tenant.save(update_fields=["quota_overrides"])
    publish_counted(limited, DEC, 600)

    assert run(DEC) == []
    assert len(mail.outbox) == 1


def test_no_limit_no_alert_and_other_tenants_untouched(acme: TenantCtx, globex: TenantCtx) -> None:
    """The developer plan has no monthly limit: no alert however much is published; a
    limited tenant's traffic alerts that tenant only, with its own owner."""
    make_plan(tenant=globex.tenant, monthly_messages=10)
    publish_counted(acme, DEC, 1_000_000)
    publish_counted(globex, DEC, 9)

    assert run(DEC) == [("monthly_messages", "2026-12", 80)]
    assert [m.to for m in mail.outbox] == [["owner@globex.test"]]
    assert alert_events(acme) == []
    assert QuotaAlert.objects.for_tenant(acme.tenant).count() == 0


def test_a_suspended_tenant_is_alerted_too(limited: TenantCtx) -> None:
    limited.tenant.is_active = False
    limited.tenant.save(update_fields=["is_active"])
    publish_counted(limited, DEC, 900)

    assert run(DEC) == [("monthly_messages", "2026-12", 80)]


def test_a_second_worker_sends_nothing(limited: TenantCtx) -> None:
    """Two workers find the same alert due; the first sends it; the second's insert of the
    once-row fails, so it sends no email and audits nothing."""
    publish_counted(limited, DEC, 850)
    usage_rollup(now=DEC)
    first, second = usage_alerts_due(now=DEC), usage_alerts_due(now=DEC)
    assert [(a.quota, a.percent, a.used, a.limit) for a in first] == [
        ("monthly_messages", 80, 850, 1000)
    ]

    assert quota_alert_send(alert=first[0]) is not None
    assert quota_alert_send(alert=second[0]) is None

    assert len(mail.outbox) == 1
    assert len(alert_events(limited)) == 1
    assert usage_alerts_due(now=DEC) == []


def test_a_failed_email_is_sent_by_the_next_run(limited: TenantCtx, settings: Any) -> None:
    """With the mail server unreachable the alert is not recorded (no once-row, no audit
    event) and the run goes on; the next run, with the server back, sends it once."""
    publish_counted(limited, DEC, 800)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2

    assert run(DEC) == []
    assert QuotaAlert.objects.for_tenant(limited.tenant).count() == 0
    assert alert_events(limited) == []

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert run(DEC) == [("monthly_messages", "2026-12", 80)]
    assert len(mail.outbox) == 1
    assert len(alert_events(limited)) == 1


def test_the_rollup_task_sends_the_alerts(limited: TenantCtx) -> None:
    """Beat's roll-up task rolls the counters up and alerts in the same run."""
    publish_counted(limited, datetime.now(UTC), 1000)

    usage_rollup_task()

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject.startswith("Acme: 100% of a monthly quota used in ")
