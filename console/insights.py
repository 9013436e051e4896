"""The console's insight pages: usage against the plan's quotas, the audit log, and charts of
each resource's traffic over time.

Charts are SVG drawn on the server by pygal and served by their own views as
``image/svg+xml``, which the pages show with ``<img>``: an SVG loaded as an image runs no
script and loads nothing, so the pages keep their strict Content-Security-Policy; the chart
responses carry a policy of their own that allows only the chart's inline stylesheet (pygal
styles the chart with it), and the script pygal adds for its tooltips is stripped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pygal  # pygal ships no type information
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView
from pygal.style import Style

from console.forms import AuditFilterForm
from console.views import TenantMixin
from kernel.errors import NotFound
from kernel.limits import METRIC_RETENTION_HOURS
from queues import selectors as queue_selectors
from tenants import selectors as tenant_selectors
from tenants.quotas import effective_quotas
from tenants.services import QUOTA_ALERT_PERCENTS

#: Days of daily usage the usage page charts and lists (today included).
USAGE_DAYS = 30
#: Keys and resources the usage page lists for this period, the busiest first.
USAGE_TOP = 20
AUDIT_PAGE_SIZE = 50
#: The time windows (hours) a resource's charts offer; the first is the default.
CHART_WINDOWS = (1, 6, 24, METRIC_RETENTION_HOURS)
RESOURCE_KINDS = ("queue", "topic", "subscription")
#: The policy of a chart response: its own inline stylesheet, nothing else.
CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"

_SCRIPT = re.compile(rb"<script\b.*?</script>", re.DOTALL)
_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#475467",
    foreground_strong="#101828",
    foreground_subtle="#98a2b3",
    colors=("#4f46e5", "#0ea5e9", "#16a34a", "#f59e0b"),
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=13,
)


def svg_response(chart: Any) -> HttpResponse:
    """A pygal chart as an ``image/svg+xml`` response, script-free, with the chart policy."""
    svg = _SCRIPT.sub(b"", chart.render())
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Content-Security-Policy"] = CHART_CSP
    response["X-Content-Type-Options"] = "nosniff"
    return response


def line_chart(title: str, labels: list[str], series: dict[str, list[int]]) -> Any:
    """A pygal line chart with the console's look and no JavaScript."""
    chart = pygal.Line(
        title=title,
        style=_STYLE,
        js=[],
        width=760,
        height=260,
        show_dots=len(labels) <= 48,
        dots_size=2,
        fill=False,
        legend_at_bottom=True,
        legend_at_bottom_columns=len(series),
        x_label_rotation=0,
        show_minor_x_labels=False,
        x_labels_major_count=8,
        truncate_label=-1,
        min_scale=1,
        include_x_axis=True,
        no_data_text="No data yet",
    )
    chart.x_labels = labels
    for name, values in series.items():
        chart.add(name, values)
    return chart


# --- usage and quotas ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRow:
    """One quota of the plan: what is used (None for a limit that is not a count, such as the
    message size) against the limit (None: unlimited)."""

    label: str
    used: int | None
    limit: int | None
    unit: str = ""

    @property
    def percent(self) -> int | None:
        """Used share of the limit, 0-100 (None without both)."""
        if self.used is None or not self.limit:
            return None
        return min(100, self.used * 100 // self.limit)

    @property
    def level(self) -> str:
        """ "danger" from 90 %, "warning" from 75 %, else "ok": the bar's colour."""
        percent = self.percent or 0
        return "danger" if percent >= 90 else "warning" if percent >= 75 else "ok"


def _days_window(today: date) -> tuple[datetime, datetime]:
    start = datetime.combine(today - timedelta(days=USAGE_DAYS - 1), datetime.min.time(), UTC)
    return start, start + timedelta(days=USAGE_DAYS)


def daily_usage(tenant: Any) -> list[dict[str, Any]]:
    """The last USAGE_DAYS days of usage, one entry per day (zeros for days with none)."""
    start, end = _days_window(timezone.now().date())
    found = {
        row["day"]: row
        for row in tenant_selectors.usage_per_day(tenant=tenant, start=start, end=end)
    }
    days = [start.date() + timedelta(days=i) for i in range(USAGE_DAYS)]
    return [
        found.get(day, {"day": day, "published": 0, "delivered": 0, "acked": 0}) for day in days
    ]


class UsageView(TenantMixin, TemplateView):
    """This calendar month's traffic and the tenant's resources against every quota that
    holds for it (its plan's or an operator's override), each monthly quota with the share
    used and the alerts sent, the USAGE_TOP busiest keys and resources of the month, and the
    traffic per day of the last USAGE_DAYS days."""

    template_name = "console/insights/usage.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        tenant = self.tenant
        plan = tenant.plan
        limits = {name: held.value for name, held in effective_quotas(tenant).items()}
        usage = tenant_selectors.usage_this_period(tenant=tenant)
        active_keys = (
            tenant_selectors.key_list(tenant=tenant)
            .filter(revoked_at__isnull=True)
            .exclude(expires_at__lte=timezone.now())
            .count()
        )
        # The limits that hold: the plan's, or an operator's override for this tenant.
        quotas = [
            QuotaRow("Messages this month", int(usage["published"]), limits["monthly_messages"]),
            QuotaRow(
                "Queues", queue_selectors.queue_list(tenant=tenant).count(), limits["max_queues"]
            ),
            QuotaRow(
                "Topics", queue_selectors.topic_list(tenant=tenant).count(), limits["max_topics"]
            ),
            QuotaRow(
                "Subscriptions",
                queue_selectors.subscription_list(tenant=tenant).count(),
                limits["max_subscriptions"],
            ),
            QuotaRow("Active API keys", active_keys, limits["max_api_keys"]),
            QuotaRow("Message size", None, limits["max_message_bytes"], "bytes"),
            QuotaRow("Publish rate", None, limits["publish_rate_per_second"], "messages / second"),
        ]
        days = daily_usage(tenant)
        period_start = datetime.fromisoformat(str(usage["period_start"]).replace("Z", "+00:00"))
        period_end = (period_start + timedelta(days=32)).replace(day=1)
        top = {
            by: tenant_selectors.usage_top(
                tenant=tenant, start=period_start, end=period_end, by=by, limit=USAGE_TOP
            )
            for by in ("key", "resource")
        }
        context = super().get_context_data(**kwargs)
        context.update(
            plan=plan,
            usage=usage,
            quotas=quotas,
            days=list(reversed(days)),
            days_total={
                name: sum(day[name] for day in days) for name in ("published", "delivered", "acked")
            },
            usage_days=USAGE_DAYS,
            monthly=tenant_selectors.monthly_quota_usage(tenant=tenant),
            top_keys=top["key"],
            top_resources=top["resource"],
            usage_top=USAGE_TOP,
            alert_percents=QUOTA_ALERT_PERCENTS,
        )
        return context


class UsageChartView(TenantMixin, View):
    """The usage page's chart: published / delivered / acked per day, as SVG."""

    def get(self, request: HttpRequest) -> HttpResponse:
        days = daily_usage(self.tenant)
        chart = line_chart(
            f"Messages per day (last {USAGE_DAYS} days, UTC)",
            [day["day"].strftime("%m-%d") for day in days],
            {
                "Published": [day["published"] for day in days],
                "Delivered": [day["delivered"] for day in days],
                "Acknowledged": [day["acked"] for day in days],
            },
        )
        return svg_response(chart)


# --- audit log ----------------------------------------------------------------------------------


class AuditView(TenantMixin, TemplateView):
    """The tenant's audit trail, newest first, AUDIT_PAGE_SIZE a page, narrowed by the filters
    in the query string (invalid filters are shown as errors and filter nothing)."""

    template_name = "console/insights/audit.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        form = AuditFilterForm(self.request.GET or None)
        filters: dict[str, Any] = {}
        if form.is_bound and form.is_valid():
            filters = {name: value for name, value in form.cleaned_data.items() if value}
        events = tenant_selectors.audit_event_search(tenant=self.tenant, **filters)
        page = Paginator(events, AUDIT_PAGE_SIZE).get_page(self.request.GET.get("page"))
        query = self.request.GET.copy()
        query.pop("page", None)
        context = super().get_context_data(**kwargs)
        context.update(
            form=form,
            page=page,
            events=list(page.object_list),
            query=query.urlencode(),
            choices=tenant_selectors.audit_filter_choices(tenant=self.tenant),
            filtered=bool(filters),
        )
        return context


# --- charts of one resource ---------------------------------------------------------------------


def chart_window(request: HttpRequest) -> int:
    """The ``hours`` of the query string if it is one of CHART_WINDOWS, else the first."""
    raw = request.GET.get("hours", "")
    return int(raw) if raw.isdigit() and int(raw) in CHART_WINDOWS else CHART_WINDOWS[0]


class ResourceChartView(TenantMixin, View):
    """A queue's, topic's or subscription's per-minute metrics as SVG: ``flow`` (published,
    delivered and acknowledged per minute) or ``backlog`` (messages not yet acknowledged and
    the oldest one's age). Another tenant's resource is a 404."""

    def get(self, request: HttpRequest, kind: str, name: str, chart: str) -> HttpResponse:
        if kind not in RESOURCE_KINDS or chart not in ("flow", "backlog"):
            raise Http404("No such chart.")
        try:
            row = queue_selectors.resource_get(tenant=self.tenant, kind=kind, name=name)
        except NotFound as exc:
            raise Http404(f"No such {kind}.") from exc
        hours = chart_window(request)
        since = timezone.now() - timedelta(hours=hours)
        metrics = list(
            queue_selectors.resource_metric_list(tenant=self.tenant, row=row, since=since)
        )
        label_format = "%H:%M" if hours <= 24 else "%d %H:%M"
        labels = [m.minute.astimezone(UTC).strftime(label_format) for m in metrics]
        window = f"last {hours} h, UTC"
        if chart == "flow":
            series = {"Published": [m.published for m in metrics]}
            if kind != "topic":
                series["Delivered"] = [m.delivered for m in metrics]
                series["Acknowledged"] = [m.acked for m in metrics]
            drawn = line_chart(f"Messages per minute ({window})", labels, series)
        else:
            drawn = line_chart(
                f"Backlog ({window})",
                labels,
                {
                    "Not yet acknowledged": [m.backlog for m in metrics],
                    "Oldest age (s)": [m.oldest_age_seconds for m in metrics],
                },
            )
        return svg_response(drawn)
