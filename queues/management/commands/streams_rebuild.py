"""./dev manage streams_rebuild: after a Redis data loss, recreate every missing stream and
consumer group at the positions last snapshotted to PostgreSQL, and say what was done."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from queues import services


class Command(BaseCommand):
    help = "Recreate missing streams and consumer groups at their snapshotted positions."

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.streams_rebuild()
        for line in report:
            self.stdout.write(line)
        self.stdout.write(
            self.style.SUCCESS(f"rebuilt {len(report)} consumer group(s)")
            if report
            else "nothing to rebuild: every stream and consumer group exists"
        )
