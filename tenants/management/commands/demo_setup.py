"""Ensure the demo tenant of `./dev up` exists: tenant "demo", owner demo@openplatform.local,
and an all-scopes API key. Running it again reuses the tenant (and the key, with --reuse-key)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from kernel.errors import Unauthenticated
from tenants import services
from tenants.authority import OPERATOR
from tenants.models import ALL_SCOPES, Membership, Role, Tenant, User
from tenants.principals import authenticate

DEMO_SLUG = "demo"
DEMO_EMAIL = "demo@openplatform.local"


class Command(BaseCommand):
    help = "Create (once) the demo tenant, its owner and an API key; print them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--password", help="The owner's password (default: a new one).")
        parser.add_argument("--reuse-key", help="Keep this key if it is still valid.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or secrets.token_urlsafe(12)
        with transaction.atomic():
            tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
            if tenant is None:
                tenant = services.tenant_create(
                    name="Demo",
                    slug=DEMO_SLUG,
                    owner_email=DEMO_EMAIL,
                    owner_password=password,
                    actor="operator:demo",
                ).tenant
            user = User.objects.get(email=DEMO_EMAIL)
            if not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
            Membership.all_tenants.get_or_create(
                tenant=tenant, user=user, defaults={"role": Role.OWNER}
            )
        api_key = self._reusable(options["reuse_key"], str(tenant.id))
        if api_key is None:
            api_key = services.key_create(
                authority=OPERATOR,
                tenant=tenant,
                name="demo key",
                scopes=list(ALL_SCOPES),
                actor="operator:demo",
            ).secret
        data = {
            "tenant": tenant.slug,
            "username": DEMO_EMAIL,
            "password": password,
            "api_key": api_key,
        }
        if options["json"]:
            self.stdout.write(json.dumps(data))
        else:
            for key, value in data.items():
                self.stdout.write(f"{key}: {value}")

    @staticmethod
    def _reusable(token: str | None, tenant_id: str) -> str | None:
        if not token:
            return None
        try:
            principal = authenticate(f"Bearer {token}")
        except Unauthenticated:
            return None
        if principal.tenant_id != tenant_id or set(principal.scopes) != set(ALL_SCOPES):
            return None
        return token
