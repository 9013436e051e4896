"""./dev manage tenant_create NAME --owner EMAIL [--json]: a tenant, its owner and an
all-scopes API key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from kernel.errors import PlatformError
from tenants import services
from tenants.authority import OPERATOR
from tenants.management.commands._output import emit
from tenants.models import ALL_SCOPES, Plan


class Command(BaseCommand):
    help = "Create a tenant with its owner and an API key holding every scope."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="The owner's email address.")
        parser.add_argument("--password", help="The owner's console password (new users).")
        parser.add_argument("--plan", help="Plan slug (default: developer).")
        parser.add_argument("--slug", help="Tenant slug (default: from the name).")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = None
        if options["plan"]:
            plan = Plan.objects.filter(slug=options["plan"]).first()
            if plan is None:
                raise CommandError(f"No plan '{options['plan']}'.")
        try:
            with transaction.atomic():
                created = services.tenant_create(
                    name=options["name"],
                    owner_email=options["owner"],
                    owner_password=options["password"],
                    plan=plan,
                    slug=options["slug"],
                    actor="operator:cli",
                )
                key = services.key_create(
                    authority=OPERATOR,
                    tenant=created.tenant,
                    name="owner key",
                    scopes=list(ALL_SCOPES),
                    actor="operator:cli",
                )
        except PlatformError as exc:
            raise CommandError(exc.detail) from exc
        emit(
            self,
            {
                "tenant": created.tenant.slug,
                "tenant_id": str(created.tenant.id),
                "owner": created.owner.email,
                "api_key": key.secret,
                "api_key_id": str(key.key.id),
            },
            options["json"],
        )
