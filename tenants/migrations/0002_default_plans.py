"""The plans every installation starts with; operators edit them in the admin."""

from typing import Any

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

PLANS: list[dict[str, Any]] = [
    {
        "slug": "free",
        "name": "Free",
        "max_queues": 10,
        "max_topics": 10,
        "max_subscriptions": 20,
        "max_api_keys": 10,
        "monthly_messages": 1_000_000,
        "publish_rate_per_second": 100,
    },
    {
        "slug": "developer",
        "name": "Developer",
        "max_queues": 1000,
        "max_topics": 1000,
        "max_subscriptions": 1000,
        "max_api_keys": 100,
        "monthly_messages": None,
        "publish_rate_per_second": None,
    },
    {
        "slug": "business",
        "name": "Business",
        "max_queues": 100_000,
        "max_topics": 100_000,
        "max_subscriptions": 100_000,
        "max_api_keys": 1000,
        "monthly_messages": None,
        "publish_rate_per_second": None,
    },
]


def create_plans(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Plan = apps.get_model("tenants", "Plan")
    for plan in PLANS:
        Plan.objects.update_or_create(slug=plan["slug"], defaults=plan)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]
