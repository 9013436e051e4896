"""./dev manage tenant_quotas TENANT [--set NAME=VALUE ...] [--unset NAME ...] [--json]

Shows a tenant's effective quotas (value and where it comes from), after applying operator
overrides: ``--set max_queues=50`` (``--set monthly_messages=unlimited``, or ``null``, for no
limit whatever the plan says) and ``--unset max_queues`` (follow the plan again). The change
goes through ``tenants.services.tenant_quotas_set``: audited, and pushed to the data plane.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kernel.errors import PlatformError
from tenants import services
from tenants.management.commands._output import emit
from tenants.models import Tenant
from tenants.quotas import BY_NAME, effective_quotas

UNLIMITED = {"null", "none", "unlimited"}


def parse_setting(raw: str) -> tuple[str, int | None]:
    """``name=value`` as (name, whole number or None for unlimited); CommandError else."""
    name, sep, value = raw.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise CommandError(f"--set {raw}: expected NAME=VALUE.")
    if name not in BY_NAME:
        raise CommandError(f"--set {raw}: not a quota (one of {', '.join(BY_NAME)}).")
    if value.lower() in UNLIMITED:
        return name, None
    if not value.isascii() or not value.isdigit():
        raise CommandError(f"--set {raw}: a whole number of at least 0, or 'unlimited'.")
    return name, int(value)


class Command(BaseCommand):
    help = "Show a tenant's effective quotas, and set or remove the operator's overrides."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("tenant", help="Tenant slug.")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="Repeat; VALUE a whole number, or 'unlimited'.",
        )
        parser.add_argument(
            "--unset",
            action="append",
            default=[],
            metavar="NAME",
            help="Repeat; the plan's value holds again.",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.select_related("plan").filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant '{options['tenant']}'.")
        overrides = dict(tenant.quota_overrides or {})
        for name in options["unset"]:
            if name not in BY_NAME:
                raise CommandError(f"--unset {name}: not a quota (one of {', '.join(BY_NAME)}).")
            overrides.pop(name, None)
        for raw in options["set"]:
            name, value = parse_setting(raw)
            overrides[name] = value
        if options["set"] or options["unset"]:
            try:
                tenant = services.tenant_quotas_set(
                    tenant=tenant, actor="operator:cli", overrides=overrides
                )
            except PlatformError as exc:
                raise CommandError(exc.detail) from exc
        quotas = effective_quotas(tenant)
        if options["json"]:
            emit(
                self,
                {
                    "tenant": tenant.slug,
                    "plan": tenant.plan.slug,
                    "quotas": {name: limit.as_dict() for name, limit in quotas.items()},
                },
                True,
            )
            return
        emit(
            self,
            {
                "tenant": tenant.slug,
                "plan": tenant.plan.slug,
                **{
                    name: f"{'unlimited' if limit.value is None else limit.value} ({limit.source})"
                    for name, limit in quotas.items()
                },
            },
            False,
        )
