"""Shared output for the operator commands: JSON with --json, readable lines otherwise."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand


def emit(command: BaseCommand, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        command.stdout.write(json.dumps(data, indent=2, default=str))
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        command.stdout.write(f"{key.ljust(width)}  {value}")
