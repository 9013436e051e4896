"""The README's pictures of the console: with SCREENSHOTS=1 in the environment this writes
docs/screenshots/{dashboard,queue-form,api-docs,phone-menu}.png; without it, it is skipped.

    SCREENSHOTS=1 ./dev test tests/browser/test_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import ROOT

OUT = ROOT / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(
    os.environ.get("SCREENSHOTS") != "1", reason="set SCREENSHOTS=1 to write docs/screenshots/"
)


def shoot(page: Any, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def test_screenshots(owner_page: Any, owner_phone: Any) -> None:
    """The dashboard, the new-queue form and the API docs at desktop width, and the phone's
    open menu: each written as a PNG."""
    owner_page.goto("/")
    written = [shoot(owner_page, "dashboard")]
    owner_page.goto("/new/queue/")
    written.append(shoot(owner_page, "queue-form"))
    owner_page.goto("/v1/docs")
    owner_page.locator(".opblock").first.wait_for()
    written.append(shoot(owner_page, "api-docs"))
    owner_phone.goto("/")
    owner_phone.get_by_text("Menu", exact=True).click()
    written.append(shoot(owner_phone, "phone-menu"))

    assert [path.read_bytes()[:8] for path in written] == [b"\x89PNG\r\n\x1a\n"] * 4
