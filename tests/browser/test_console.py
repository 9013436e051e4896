"""The console in a real browser: what a person signing in sees and can do."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleLog, Site, at_path, sign_in


def test_owner_sees_queue_stats_and_creates_a_queue(
    page: Any, site: Site, console_log: ConsoleLog
) -> None:
    """The owner signs in through the form, sees the queue ``orders`` with its three available
    messages, creates ``invoices`` through the form and finds it on the dashboard; no page
    broke the CSP or logged an error."""
    sign_in(page, site.owner)
    row = page.locator("#queues tbody tr", has_text="orders")
    assert row.count() == 1
    assert row.locator("td.num").first.inner_text().strip() == "3"

    page.get_by_role("link", name="New queue").click()
    page.wait_for_url(at_path("/new/queue/"))
    page.get_by_label("Name").fill("invoices")
    page.get_by_role("button", name=re.compile("Create")).click()
    page.wait_for_url(at_path("/"))
    names = page.locator("#queues tbody td.name").all_inner_texts()
    assert sorted(name.strip() for name in names) == ["invoices", "orders"]
    assert console_log.csp_violations() == []
    assert console_log.errors() == []


def test_phone_menu_opens_and_navigates(owner_phone: Any) -> None:
    """At 390 px the sections hide behind a Menu button, which opens them with sign-out; a
    section's link goes to that section."""
    phone = owner_phone
    phone.goto("/")
    sections = phone.get_by_role("navigation", name="Sections")
    sign_out = phone.locator(".navmenu").get_by_role("button", name=re.compile("^Sign out"))
    assert not sections.is_visible()
    assert not sign_out.is_visible()

    phone.get_by_text("Menu", exact=True).click()
    assert sections.is_visible()
    assert sign_out.is_visible()
    sections.get_by_role("link", name="Topics").click()
    # The Topics section is a part of the dashboard or a page of its own.
    expect(phone).to_have_url(re.compile(r"/(#topics|topics/)$"))


def test_desktop_shows_sections_without_a_menu(owner_page: Any) -> None:
    """On a wide screen the sections are in the top bar and there is no Menu button."""
    owner_page.goto("/")
    assert owner_page.get_by_role("navigation", name="Sections").is_visible()
    assert not owner_page.get_by_text("Menu", exact=True).is_visible()


def test_viewer_sees_no_write_buttons_and_a_post_is_refused(viewer_page: Any, site: Site) -> None:
    """A viewer's dashboard has no New ... buttons; a POST of the queue form from their session
    is a 403 and no queue is made."""
    page = viewer_page
    page.goto("/")
    assert page.locator("#queues").is_visible()
    assert page.get_by_role("link", name=re.compile("^New ")).count() == 0
    before = [q["name"] for q in site.tenant.http.get("/v1/queues").json()["results"]]

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    refused = page.request.post(
        "/new/queue/",
        form={"name": "sneaky", "csrfmiddlewaretoken": token},
        headers={"Referer": site.url + "/"},
    )
    assert refused.status == 403
    after = [q["name"] for q in site.tenant.http.get("/v1/queues").json()["results"]]
    assert after == before
    assert "sneaky" not in after
