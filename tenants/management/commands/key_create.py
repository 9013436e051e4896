"""./dev manage key_create TENANT --name N [--scope S ...] [--resource P ...] [--json]"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kernel.errors import PlatformError
from tenants import services
from tenants.authority import OPERATOR
from tenants.management.commands._output import emit
from tenants.models import ALL_SCOPES, Tenant


class Command(BaseCommand):
    help = "Issue an API key for a tenant; its secret is printed once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("tenant", help="Tenant slug.")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scope", action="append", choices=ALL_SCOPES, help="Repeat; default: all scopes."
        )
        parser.add_argument(
            "--resource", action="append", help='Repeat; e.g. "queue:orders", "topic:events.*".'
        )
        parser.add_argument("--expires-in-days", type=int)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant '{options['tenant']}'.")
        expires_at = None
        if options["expires_in_days"]:
            expires_at = datetime.now(UTC) + timedelta(days=options["expires_in_days"])
        try:
            created = services.key_create(
                authority=OPERATOR,
                tenant=tenant,
                name=options["name"],
                scopes=options["scope"] or list(ALL_SCOPES),
                resources=options["resource"] or [],
                expires_at=expires_at,
                actor="operator:cli",
            )
        except PlatformError as exc:
            raise CommandError(exc.detail) from exc
        emit(
            self,
            {
                "tenant": tenant.slug,
                "id": str(created.key.id),
                "name": created.key.name,
                "scopes": created.key.scopes,
                "resources": created.key.resources,
                "api_key": created.secret,
            },
            options["json"],
        )
