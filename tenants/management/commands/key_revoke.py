"""./dev manage key_revoke TENANT KEY_ID_OR_PREFIX"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kernel.errors import PlatformError
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ApiKey, Tenant


class Command(BaseCommand):
    help = "Revoke an API key (by id or prefix); every process refuses it within a second."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("tenant", help="Tenant slug.")
        parser.add_argument("key", help="The key's id, or its prefix (op_<prefix>_…).")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant '{options['tenant']}'.")
        ident = options["key"].removeprefix("op_").split("_")[0]
        match = ApiKey.objects.for_tenant(tenant).filter(prefix=ident).first()
        key_id = str(match.id) if match else options["key"]
        try:
            key = services.key_revoke(
                authority=OPERATOR, tenant=tenant, key_id=key_id, actor="operator:cli"
            )
        except PlatformError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(
            f"revoked {key.name} (op_{key.prefix}_…) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
