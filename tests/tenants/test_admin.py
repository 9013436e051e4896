"""The operators' admin for tenants (tenants/admin.py) and its dashboard
(tenants/admin_dashboard.py): staff see and change everything through the services (each
change audited as ``operator:<email>``, suspensions holding on the data plane at once); anyone
else is sent to the admin's sign-in and sees nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from tenants import admin_dashboard
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant, UsageRecord, User
from tenants.quotas import QUOTAS
from tests.factories import (
    PASSWORD,
    TenantCtx,
    make_key,
    make_member,
    make_plan,
    make_tenant,
    make_user,
    signed_in,
)
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

OPERATOR = "operator:root@example.test"
PUBLISH = "/v1/queues/orders/messages"
DASHBOARD = "/admin/tenants/tenant/dashboard/"


@pytest.fixture
def staff(db: Any) -> Client:
    return signed_in(User.objects.create_superuser("root@example.test", PASSWORD))


def _events(tenant: Tenant) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.actor, e.action, e.data) for e in AuditEvent.objects.for_tenant(tenant).order_by("id")
    ]


def _publish(ctx: TenantCtx) -> Any:
    return ctx.client.post(PUBLISH, data={"body": "hi"}, content_type="application/json")


def _tenant_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """The change form's fields as the page shows them for ``tenant``, with ``changes``."""
    data: dict[str, Any] = {"name": tenant.name, "plan": tenant.plan_id, "_save": "Save"}
    if tenant.is_active:
        data["is_active"] = "on"
    for name, value in (tenant.quota_overrides or {}).items():
        if value is None:
            data[f"quota_{name}_unlimited"] = "on"
        else:
            data[f"quota_{name}"] = value
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


# --- every page answers ------------------------------------------------------------------------


def test_every_changelist_and_change_page_answers(
    staff: Client, acme: TenantCtx, globex: TenantCtx
) -> None:
    """Each model's list, each row's page and each add form the admin offers answer 200."""
    UsageRecord.all_tenants.create(
        tenant=acme.tenant, hour=datetime(2026, 10, 1, tzinfo=UTC), published=3
    )
    membership = Membership.objects.for_tenant(acme.tenant).get()
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    usage = UsageRecord.objects.for_tenant(acme.tenant).get()
    event = AuditEvent.objects.for_tenant(acme.tenant).first()
    assert event is not None
    pages = {
        "tenant": acme.tenant.pk,
        "plan": acme.tenant.plan_id,
        "user": acme.owner.pk,
        "membership": membership.pk,
        "apikey": key.pk,
        "usagerecord": usage.pk,
        "auditevent": event.pk,
    }
    assert staff.get("/admin/").status_code == 200
    for model, pk in pages.items():
        assert staff.get(f"/admin/tenants/{model}/").status_code == 200, model
        assert staff.get(f"/admin/tenants/{model}/{pk}/change/").status_code == 200, model
    for model in ("tenant", "plan", "user", "membership"):
        assert staff.get(f"/admin/tenants/{model}/add/").status_code == 200, model
    assert staff.get(DASHBOARD).status_code == 200


def test_the_key_page_never_shows_the_secret_hash(staff: Client, acme: TenantCtx) -> None:
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    for page in ("/admin/tenants/apikey/", f"/admin/tenants/apikey/{key.pk}/change/"):
        html = staff.get(page).content.decode()
        assert key.prefix in html
        assert key.secret_hash not in html
        assert "secret_hash" not in html


def test_the_index_links_the_dashboard(staff: Client) -> None:
    html = staff.get("/admin/").content.decode()
    assert f'href="{DASHBOARD}"' in html
    assert "OpenPlatform operators" in html


# --- search ------------------------------------------------------------------------------------


def _listed(response: Any) -> list[Any]:
    return list(response.context["cl"].result_list)


def test_tenant_search_by_name_slug_and_id(
    staff: Client, acme: TenantCtx, globex: TenantCtx
) -> None:
    assert _listed(staff.get("/admin/tenants/tenant/?q=glob")) == [globex.tenant]
    assert _listed(staff.get("/admin/tenants/tenant/?q=Acme")) == [acme.tenant]
    assert _listed(staff.get(f"/admin/tenants/tenant/?q={acme.tenant.id}")) == [acme.tenant]
    assert _listed(staff.get("/admin/tenants/tenant/?q=nobody")) == []
    assert _listed(staff.get("/admin/tenants/tenant/?is_active__exact=1")) == [
        acme.tenant,
        globex.tenant,
    ]


def test_key_search_by_prefix_name_and_tenant(
    staff: Client, acme: TenantCtx, globex: TenantCtx
) -> None:
    extra = make_key(tenant=acme.tenant, name="billing-writer").key
    globex_key = ApiKey.objects.for_tenant(globex.tenant).get()
    assert _listed(staff.get(f"/admin/tenants/apikey/?q={extra.prefix}")) == [extra]
    assert _listed(staff.get("/admin/tenants/apikey/?q=billing-writer")) == [extra]
    assert _listed(staff.get("/admin/tenants/apikey/?q=globex")) == [globex_key]


# --- tenants: overrides, plan, suspend and resume ---------------------------------------------


def test_override_form_saves_exact_values_with_one_audit_event(
    staff: Client, acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    """Numbers override, "unlimited" is null, empty follows the plan; one tenant.quotas_set."""
    before = _events(acme.tenant)
    data = _tenant_form(
        acme.tenant,
        quota_max_queues=7,
        quota_monthly_messages=0,
        quota_publish_rate_per_second_unlimited="on",
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/tenants/tenant/{acme.tenant.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    acme.tenant.refresh_from_db()
    wanted = {"max_queues": 7, "monthly_messages": 0, "publish_rate_per_second": None}
    assert acme.tenant.quota_overrides == wanted
    assert _events(acme.tenant) == [
        *before,
        (OPERATOR, "tenant.quotas_set", {"before": {}, "after": wanted}),
    ]
    assert LogEntry.objects.filter(object_id=str(acme.tenant.pk)).count() == 1
    page = staff.get(f"/admin/tenants/tenant/{acme.tenant.pk}/change/").content.decode()
    assert 'name="quota_max_queues" value="7"' in page


def test_override_form_refuses_a_number_and_unlimited_together(
    staff: Client, acme: TenantCtx
) -> None:
    before = _events(acme.tenant)
    data = _tenant_form(acme.tenant, quota_max_queues=7, quota_max_queues_unlimited="on")

    response = staff.post(f"/admin/tenants/tenant/{acme.tenant.pk}/change/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "quota_max_queues": ["Give a number or tick unlimited, not both."]
    }
    acme.tenant.refresh_from_db()
    assert acme.tenant.quota_overrides == {}
    assert _events(acme.tenant) == before


def test_every_quota_has_a_field(staff: Client, acme: TenantCtx) -> None:
    form = staff.get(f"/admin/tenants/tenant/{acme.tenant.pk}/change/").context["adminform"].form
    for quota in QUOTAS:
        assert f"quota_{quota.name}" in form.fields
        assert f"quota_{quota.name}_unlimited" in form.fields


def test_plan_change_is_audited(
    staff: Client, acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    before = _events(acme.tenant)
    old = acme.tenant.plan
    pro = make_plan(slug="pro", name="Pro")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            f"/admin/tenants/tenant/{acme.tenant.pk}/change/",
            _tenant_form(acme.tenant, plan=pro.pk, name="Acme Corp"),
        )

    assert response.status_code == 302
    acme.tenant.refresh_from_db()
    assert (acme.tenant.plan, acme.tenant.name) == (pro, "Acme Corp")
    assert _events(acme.tenant) == [
        *before,
        (
            OPERATOR,
            "tenant.update",
            {
                "before": {"name": "Acme", "plan": old.slug},
                "after": {"name": "Acme Corp", "plan": "pro"},
            },
        ),
    ]


def test_saving_an_unchanged_tenant_writes_no_audit_event(
    staff: Client, acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    before = _events(acme.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            f"/admin/tenants/tenant/{acme.tenant.pk}/change/", _tenant_form(acme.tenant)
        )
    assert response.status_code == 302
    assert _events(acme.tenant) == before


def test_suspend_action_refuses_the_next_publish_and_resume_restores_it(
    staff: Client, acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.factories import make_queue

    make_queue(tenant=acme.tenant, name="orders")
    assert _publish(acme).status_code == 201
    before = _events(acme.tenant)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/admin/tenants/tenant/",
            {"action": "suspend", "_selected_action": [str(acme.tenant.pk)]},
        )
    assert response.status_code == 302

    body = assert_problem(_publish(acme), 401, "unauthenticated")
    assert body["detail"] == "This API key's tenant is not active."
    assert _events(acme.tenant) == [*before, (OPERATOR, "tenant.suspend", {})]

    with django_capture_on_commit_callbacks(execute=True):
        staff.post(
            "/admin/tenants/tenant/",
            {"action": "resume", "_selected_action": [str(acme.tenant.pk)]},
        )

    assert _publish(acme).status_code == 201
    assert _events(acme.tenant) == [
        *before,
        (OPERATOR, "tenant.suspend", {}),
        (OPERATOR, "tenant.resume", {}),
    ]


def test_suspending_a_suspended_tenant_changes_nothing(
    staff: Client, acme: TenantCtx, globex: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        staff.post(
            "/admin/tenants/tenant/",
            {"action": "suspend", "_selected_action": [str(acme.tenant.pk)]},
        )
    before = _events(acme.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        staff.post(
            "/admin/tenants/tenant/",
            {"action": "suspend", "_selected_action": [str(acme.tenant.pk)]},
        )
    assert _events(acme.tenant) == before
    globex.tenant.refresh_from_db()
    assert globex.tenant.is_active is True


def test_clearing_active_on_the_form_suspends(
    staff: Client, acme: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.factories import make_queue

    make_queue(tenant=acme.tenant, name="orders")
    with django_capture_on_commit_callbacks(execute=True):
        staff.post(
            f"/admin/tenants/tenant/{acme.tenant.pk}/change/",
            _tenant_form(acme.tenant, is_active=False),
        )
    assert_problem(_publish(acme), 401, "unauthenticated")
    assert _events(acme.tenant)[-1] == (OPERATOR, "tenant.suspend", {})


def test_tenant_add_makes_the_tenant_and_its_owner(
    staff: Client, db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    plan = make_plan(slug="pro", name="Pro")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/admin/tenants/tenant/add/",
            {
                "name": "Initech",
                "slug": "initech",
                "plan": plan.pk,
                "owner_email": "Bill@Initech.test",
                "quota_max_queues": "3",
            },
        )
    tenant = Tenant.objects.get(slug="initech")
    assert response.status_code == 302
    assert response["Location"] == "/admin/tenants/tenant/"
    assert (tenant.name, tenant.plan, tenant.quota_overrides) == (
        "Initech",
        plan,
        {"max_queues": 3},
    )
    owner = Membership.objects.for_tenant(tenant).get()
    assert (owner.user.email, owner.role) == ("bill@initech.test", Role.OWNER)
    assert [(a, act) for a, act, _ in _events(tenant)] == [
        (OPERATOR, "tenant.create"),
        (OPERATOR, "tenant.quotas_set"),
    ]


def test_tenants_cannot_be_deleted(staff: Client, acme: TenantCtx) -> None:
    response = staff.post(f"/admin/tenants/tenant/{acme.tenant.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Tenant.objects.filter(pk=acme.tenant.pk).exists()


# --- plans -------------------------------------------------------------------------------------


def test_plan_edit_is_audited_for_its_tenants(
    staff: Client, acme: TenantCtx, globex: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    plan = make_plan(slug="pro", name="Pro", tenant=acme.tenant, base_fee_minor=1900)
    form = staff.get(f"/admin/tenants/plan/{plan.pk}/change/")
    assert "1900 EUR minor units" in staff.get("/admin/tenants/plan/").content.decode()
    data = {
        name: ("" if value is None else value)
        for name, value in form.context["adminform"].form.initial.items()
        if name != "id"
    }
    data.update(monthly_messages=5000, base_fee_minor=2500)
    globex_before = _events(globex.tenant)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/tenants/plan/{plan.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    plan.refresh_from_db()
    assert (plan.monthly_messages, plan.base_fee_minor) == (5000, 2500)
    assert _events(acme.tenant)[-1] == (
        OPERATOR,
        "plan.update",
        {"changed": {"base_fee_minor": 2500, "monthly_messages": 5000}},
    )
    assert _events(globex.tenant) == globex_before


# --- people and keys ---------------------------------------------------------------------------


def test_membership_role_change_and_removal_are_audited(staff: Client, acme: TenantCtx) -> None:
    dev = make_member(tenant=acme.tenant, email="dev@acme.test")
    membership = Membership.objects.for_tenant(acme.tenant).get(user=dev)

    response = staff.post(f"/admin/tenants/membership/{membership.pk}/change/", {"role": "admin"})
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN
    assert _events(acme.tenant)[-1] == (
        OPERATOR,
        "member.role",
        {"email": "dev@acme.test", "from": "developer", "to": "admin"},
    )

    response = staff.post(f"/admin/tenants/membership/{membership.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.for_tenant(acme.tenant).filter(user=dev).exists()
    assert _events(acme.tenant)[-1] == (
        OPERATOR,
        "member.remove",
        {"email": "dev@acme.test", "role": "admin"},
    )


def test_membership_add_is_audited_and_refuses_a_duplicate(staff: Client, acme: TenantCtx) -> None:
    person = make_user(email="new@acme.test")
    data = {"tenant": str(acme.tenant.pk), "user": person.pk, "role": "viewer"}

    assert staff.post("/admin/tenants/membership/add/", data).status_code == 302
    assert _events(acme.tenant)[-1] == (
        OPERATOR,
        "member.add",
        {"email": "new@acme.test", "role": "viewer"},
    )
    before = _events(acme.tenant)

    again = staff.post("/admin/tenants/membership/add/", {**data, "role": "admin"})
    assert again.status_code == 200
    assert again.context["adminform"].form.non_field_errors() == [
        "new@acme.test is a member of acme already."
    ]
    assert Membership.objects.for_tenant(acme.tenant).get(user=person).role == Role.VIEWER
    assert _events(acme.tenant) == before


def test_the_last_owner_is_neither_demoted_nor_removed(staff: Client, acme: TenantCtx) -> None:
    owner = Membership.objects.for_tenant(acme.tenant).get(user=acme.owner)
    before = _events(acme.tenant)

    demote = staff.post(f"/admin/tenants/membership/{owner.pk}/change/", {"role": "viewer"})
    assert demote.status_code == 200
    assert "A tenant needs an owner" in str(demote.context["adminform"].form.non_field_errors())
    remove = staff.post(
        f"/admin/tenants/membership/{owner.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert "A tenant needs an owner" in remove.content.decode()

    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    assert _events(acme.tenant) == before


def test_revoke_action_refuses_the_key_at_once(
    staff: Client, acme: TenantCtx, globex: TenantCtx, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.factories import api_client, make_queue

    make_queue(tenant=acme.tenant, name="orders")
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    assert _publish(acme).status_code == 201

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [str(key.pk)]}
        )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    body = assert_problem(_publish(acme), 401, "unauthenticated")
    assert body["detail"] == "This API key has been revoked."
    assert _events(acme.tenant)[-1] == (OPERATOR, "key.revoke", {"name": "all"})
    assert ApiKey.objects.for_tenant(globex.tenant).get().revoked_at is None
    assert api_client(globex.key).get("/v1/tenant").status_code == 200


def test_keys_cannot_be_added_edited_or_deleted(staff: Client, acme: TenantCtx) -> None:
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    assert staff.get("/admin/tenants/apikey/add/").status_code == 403
    assert staff.post(f"/admin/tenants/apikey/{key.pk}/change/", {"name": "x"}).status_code == 403
    assert staff.post(f"/admin/tenants/apikey/{key.pk}/delete/", {"post": "yes"}).status_code == 403
    key.refresh_from_db()
    assert (key.name, key.revoked_at) == ("all", None)


def test_user_staff_flag_change_is_audited(staff: Client, acme: TenantCtx) -> None:
    owner = acme.owner
    page = staff.get(f"/admin/tenants/user/{owner.pk}/change/")
    form = page.context["adminform"].form
    assert "is_staff" in form.fields
    data = {"email": owner.email, "name": owner.name, "is_active": "on", "is_staff": "on"}

    response = staff.post(f"/admin/tenants/user/{owner.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    owner.refresh_from_db()
    assert owner.is_staff is True
    assert _events(acme.tenant)[-1] == (OPERATOR, "account.operator_change", {"is_staff": True})


# --- the audit trail is read-only -------------------------------------------------------------


def test_audit_events_cannot_be_added_changed_or_deleted(staff: Client, acme: TenantCtx) -> None:
    event = AuditEvent.objects.for_tenant(acme.tenant).first()
    assert event is not None
    before = _events(acme.tenant)

    assert staff.get("/admin/tenants/auditevent/add/").status_code == 403
    assert staff.post("/admin/tenants/auditevent/add/", {"actor": "x"}).status_code == 403
    assert (
        staff.post(f"/admin/tenants/auditevent/{event.pk}/change/", {"actor": "x"}).status_code
        == 403
    )
    assert staff.get(f"/admin/tenants/auditevent/{event.pk}/delete/").status_code == 403
    assert (
        staff.post(f"/admin/tenants/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    bulk = staff.post(
        "/admin/tenants/auditevent/",
        {"action": "delete_selected", "_selected_action": [str(event.pk)], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert _events(acme.tenant) == before


def test_usage_records_are_read_only(staff: Client, acme: TenantCtx) -> None:
    row = UsageRecord.all_tenants.create(
        tenant=acme.tenant, hour=datetime(2026, 10, 1, tzinfo=UTC), published=3
    )
    assert staff.get("/admin/tenants/usagerecord/add/").status_code == 403
    changed = staff.post(f"/admin/tenants/usagerecord/{row.pk}/change/", {"published": 9})
    assert changed.status_code == 403
    assert staff.post(f"/admin/tenants/usagerecord/{row.pk}/delete/").status_code == 403
    row.refresh_from_db()
    assert row.published == 3
    listed = _listed(staff.get(f"/admin/tenants/usagerecord/?tenant__id__exact={acme.tenant.pk}"))
    assert listed == [row]


# --- the dashboard ----------------------------------------------------------------------------


def _usage(tenant: Tenant, hour: datetime, **counts: int) -> None:
    UsageRecord.all_tenants.create(tenant=tenant, hour=hour, **counts)


def test_dashboard_shows_exact_figures_for_a_seeded_month(
    staff: Client, acme: TenantCtx, globex: TenantCtx
) -> None:
    """October 2026: Acme published 850 of a 1000 plan quota (85 %: near), Globex 50 of its
    100 override (50 %: not near) but delivered more; key and resource rows and other months
    count nowhere; the daily totals cover 2 to 31 October."""
    make_plan(slug="small", name="Small", tenant=acme.tenant, monthly_messages=1000)
    globex.tenant.quota_overrides = {"monthly_messages": 100}
    globex.tenant.save(update_fields=["quota_overrides"])
    initech = make_tenant(name="Initech")  # no traffic, no quota: in neither list
    oct1 = datetime(2026, 10, 1, 0, tzinfo=UTC)
    oct5 = datetime(2026, 10, 5, 13, tzinfo=UTC)
    _usage(acme.tenant, oct1, published=800, delivered=10, acked=5, requests=900)
    _usage(
        acme.tenant,
        oct5,
        published=50,
        delivered=20,
        acked=20,
        requests=60,
        published_bytes=1000,
        delivered_bytes=24,
    )
    _usage(
        globex.tenant,
        oct5 + timedelta(hours=1),
        published=50,
        delivered=900,
        acked=899,
        requests=1000,
    )
    # Counted in neither: a key's and a resource's rows, September and November.
    UsageRecord.all_tenants.create(tenant=acme.tenant, hour=oct5, key_prefix="abc", published=9)
    UsageRecord.all_tenants.create(tenant=acme.tenant, hour=oct5, resource="queue:x", published=9)
    _usage(acme.tenant, datetime(2026, 9, 30, 23, tzinfo=UTC), published=7)
    _usage(globex.tenant, datetime(2026, 11, 1, tzinfo=UTC), published=7)

    response = staff.get(DASHBOARD + "?month=2026-10")

    assert response.status_code == 200
    ctx = response.context
    assert ctx["month"] == date(2026, 10, 1)
    assert [
        (r.tenant.slug, r.published, r.delivered, r.acked, r.requests, r.traffic_bytes)
        for r in ctx["top_traffic"]
    ] == [
        ("globex", 50, 900, 899, 1000, 0),
        ("acme", 850, 30, 25, 960, 1024),
    ]
    assert [(r.tenant.slug, r.used, r.limit, r.source, r.percent) for r in ctx["near_quota"]] == [
        ("acme", 850, 1000, "plan", 85)
    ]
    days = ctx["days"]
    assert len(days) == 30
    assert (days[0].day, days[-1].day) == (date(2026, 10, 2), date(2026, 10, 31))
    busy = {d.day: (d.published, d.delivered, d.acked) for d in days if d.published}
    assert busy == {date(2026, 10, 5): (100, 920, 919)}  # 1 October is outside the 30 days
    total = ctx["days_total"]
    assert (total.published, total.delivered, total.acked) == (100, 920, 919)
    html = response.content.decode()
    assert initech.tenant.slug not in html
    if admin_dashboard._revenue_source is None:
        assert ctx["top_revenue"] is None
        assert "billing not installed" in html


@pytest.fixture
def revenue_source() -> Iterator[list[int]]:
    """A registered revenue source answering three rows (what billing's selector returns);
    yields the limits it was asked for. The registration before the test comes back after."""
    asked: list[int] = []
    previous = admin_dashboard._revenue_source

    def source(*, limit: int) -> list[dict[str, Any]]:
        asked.append(limit)
        return [
            {"tenant": "globex", "total_minor": 123_456, "currency": "EUR"},
            {"tenant": "acme", "total_minor": 1_900, "currency": "EUR"},
        ]

    admin_dashboard.set_revenue_source(source)
    yield asked
    admin_dashboard.set_revenue_source(previous)


def test_dashboard_shows_revenue_from_the_registered_source(
    staff: Client, acme: TenantCtx, revenue_source: list[int]
) -> None:
    response = staff.get(DASHBOARD)
    assert [(r.tenant, r.total_minor, r.currency) for r in response.context["top_revenue"]] == [
        ("globex", 123_456, "EUR"),
        ("acme", 1_900, "EUR"),
    ]
    assert revenue_source == [10]
    html = response.content.decode()
    assert "billing not installed" not in html
    assert '<td class="num">123456</td><td>EUR</td>' in html


def test_dashboard_without_a_revenue_source_says_billing_is_not_installed(
    staff: Client, acme: TenantCtx
) -> None:
    previous = admin_dashboard._revenue_source
    admin_dashboard.set_revenue_source(None)
    try:
        response = staff.get(DASHBOARD)
    finally:
        admin_dashboard.set_revenue_source(previous)
    assert response.context["top_revenue"] is None
    assert "billing not installed" in response.content.decode()


def test_dashboard_counts_a_zero_quota_as_full(staff: Client, acme: TenantCtx) -> None:
    acme.tenant.quota_overrides = {"monthly_messages": 0}
    acme.tenant.save(update_fields=["quota_overrides"])
    near = staff.get(DASHBOARD + "?month=2026-10").context["near_quota"]
    assert [(r.tenant.slug, r.used, r.limit, r.percent) for r in near] == [("acme", 0, 0, 100)]


def test_dashboard_page_is_csp_strict(staff: Client, acme: TenantCtx) -> None:
    from tests.openplatform.test_csp import assert_strict_page

    assert_strict_page(staff.get(DASHBOARD))
    assert_strict_page(staff.get(f"/admin/tenants/tenant/{acme.tenant.pk}/change/"))
    assert_strict_page(staff.get("/admin/tenants/tenant/"))


# --- not staff: nothing -----------------------------------------------------------------------


PRIVATE_PAGES = (
    "/admin/",
    "/admin/tenants/tenant/",
    DASHBOARD,
    "/admin/tenants/apikey/",
    "/admin/tenants/auditevent/",
)


@pytest.mark.parametrize("who", ["member", "anonymous"])
def test_non_staff_are_sent_to_the_admin_login(who: str, acme: TenantCtx) -> None:
    """A signed-in tenant owner who is not staff, or nobody: every admin page redirects to
    the admin's sign-in and shows no data; a refused action changes nothing."""
    client = signed_in(acme.owner) if who == "member" else Client()
    for page in PRIVATE_PAGES:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"] == f"/admin/login/?next={page}"
    for page in (f"/admin/tenants/tenant/{acme.tenant.pk}/change/", DASHBOARD):
        shown = client.get(page, follow=True)
        if who == "anonymous":  # the console's sign-in form, which comes back to the page
            assert shown.redirect_chain[-1] == (f"/login/?next={quote(page, safe='')}", 302)
            assert shown.templates[0].name == "registration/login.html"
        else:  # signed in without staff rights: refused, not sent round in circles
            assert shown.status_code == 403
        html = shown.content.decode()
        assert "Acme" not in html  # the tenant's name
        assert acme.key.split("_")[1] not in html  # its key's prefix
    before = _events(acme.tenant)
    client.post(
        "/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [str(acme.tenant.pk)]}
    )
    acme.tenant.refresh_from_db()
    assert acme.tenant.is_active is True
    assert _events(acme.tenant) == before


def test_the_admin_sign_in_is_the_consoles_with_its_second_step(acme: TenantCtx) -> None:
    """The admin's password-only form is not served: /admin/login/ sends operators to the
    console's sign-in, whose two-factor step and lock-out then hold for the admin too; after
    it, a staff member lands on the admin page they asked for."""
    from tests.factories import PASSWORD, make_user

    staff = make_user(email="ops@platform.test", is_staff=True, is_superuser=True)
    client = Client()
    assert client.post("/admin/login/", {"username": staff.email, "password": PASSWORD}).url == (
        "/login/"
    )
    assert "_auth_user_id" not in client.session
    response = client.post(
        "/login/?next=/admin/", {"username": staff.email, "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1] == ("/admin/", 302)
    assert response.status_code == 200


def test_an_audit_event_page_shows_its_data(staff: Client, acme: TenantCtx) -> None:
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="tenant.create")
    page = staff.get(f"/admin/tenants/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "owner@acme.test" in html
    assert 'name="_save"' not in html  # read-only: no save button
