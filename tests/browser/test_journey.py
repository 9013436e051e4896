"""A newcomer's whole first hour, in the browser, without a terminal: sign up, confirm the
address from the email, make a queue with a dead-letter queue, send and browse a message, pull
it with an API key made in the console, let it fail into the dead-letter queue and redrive it
back. Then the team: an invitation by email, a viewer who can change nothing, a role change
and a removal.

The steps build on each other, so each test is one story; the platform's mail goes to files
(tests/system/conftest.py), which is where the links come from."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, ConsoleLog, Site, at_path, open_page, sign_in
from tests.factories import PASSWORD, api_headers
from tests.system.conftest import Platform

NEWCOMER = "dev@journey.test"
TEAMMATE = "teammate@journey.test"


def flash(page: Any) -> str:
    """The text of the page's messages (success, info, error)."""
    return " ".join(page.locator(".messages, [role=status], [role=alert]").all_inner_texts())


def sign_up(page: Any, email: str, organisation: str) -> None:
    page.goto("/login/")
    page.get_by_role("link", name=re.compile("Sign up|Create an account", re.IGNORECASE)).click()
    page.wait_for_url(at_path("/signup/"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Organisation").fill(organisation)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(at_path("/"))


def create_queue(page: Any, name: str, **settings: str) -> None:
    """The dashboard's New queue form, with ``settings`` by field label."""
    page.goto("/")
    page.get_by_role("link", name="New queue").click()
    page.wait_for_url(at_path("/new/queue/"))
    page.get_by_label("Name").fill(name)
    for label, value in settings.items():
        # A label is the field's name, and "(optional)" after it when it is.
        field = page.get_by_label(re.compile(rf"^{re.escape(label)}( \(optional\))?$"))
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name=re.compile("^Create")).click()
    page.wait_for_url(lambda url: "/new/queue/" not in url)


def settings_of(site: Site, queue: str) -> dict[str, Any]:
    """The queue as the API shows it, but the age of its oldest message (which grows)."""
    shown = site.tenant.http.get(f"/v1/queues/{queue}").json()
    del shown["stats"]["oldest_age_seconds"]
    return shown


def test_sign_up_to_redrive(platform: Platform, chromium: Any, console_log: ConsoleLog) -> None:
    page = open_page(chromium, platform.url, console_log, DESKTOP)

    # Sign up: signed in at once, the tenant read-only until the address is confirmed.
    sign_up(page, NEWCOMER, "Journey Co")
    expect(page.locator("main")).to_contain_text("Journey Co")
    refused = page.request.get("/new/queue/")
    assert refused.status == 403, "an unconfirmed tenant can write"

    page.goto(platform.link_sent_to(NEWCOMER, "/verify/"))
    page.wait_for_url(at_path("/"))
    assert f"{NEWCOMER} is confirmed." in flash(page)

    # A queue that dead-letters after one delivery, into a queue of its own.
    create_queue(page, "orders-dlq")
    create_queue(
        page, "orders", **{"Dead-letter queue": "orders-dlq", "Max delivery attempts": "1"}
    )
    page.goto("/queues/")
    assert page.locator("td.name").all_inner_texts() == ["orders", "orders-dlq"]

    # Send from the workbench and browse: the message is there, and browsing leased nothing.
    page.get_by_role("link", name="orders", exact=True).click()
    page.wait_for_url(at_path("/queues/orders/"))
    page.get_by_role("link", name="Send a test message").click()
    page.get_by_label("Body", exact=True).fill('{"order": 42}')
    page.get_by_label("Attributes").fill("region=eu")
    page.get_by_role("button", name=re.compile("^Send")).click()
    page.goto("/queues/orders/messages/")
    stored = page.locator("#stored tbody tr")
    expect(stored).to_have_count(1)
    expect(stored).to_contain_text("available")
    expect(stored).to_contain_text('"order": 42')
    expect(stored).to_contain_text("region=eu")
    page.reload()
    expect(page.locator("#stored tbody tr")).to_contain_text("available")

    # An API key from the console; its secret is shown once, and a reload makes no second key.
    page.goto("/")
    page.get_by_role("link", name="New API key").click()
    page.get_by_label("Name").fill("journey-worker")
    page.get_by_role("button", name=re.compile("^Create")).click()
    secret = page.locator("#secret").input_value()
    assert secret.startswith("op_")
    page.reload()
    expect(page.locator("main")).to_contain_text("This key's secret was already shown.")
    assert page.locator("#secret").count() == 0
    page.goto("/")
    expect(page.locator("#keys tbody tr", has_text="journey-worker")).to_have_count(1)

    with httpx.Client(base_url=platform.url, headers=api_headers(secret), timeout=10) as api:
        pulled = api.post("/v1/queues/orders/pull", json={"max_messages": 10}).json()["messages"]
        assert [(m["body"], m["attributes"]["region"]) for m in pulled] == [({"order": 42}, "eu")]
        # The one allowed delivery fails: the message moves to the dead-letter queue.
        nacked = api.post("/v1/queues/orders/nack", json={"ack_ids": [pulled[0]["ack_id"]]})
        assert nacked.status_code == 200
        assert api.post("/v1/queues/orders/pull", json={}).json()["messages"] == []

        # The dead-letter page names the source, the reason and the attempts; redrive it.
        page.goto("/queues/orders-dlq/")
        page.get_by_role("link", name="Dead letters").click()
        page.wait_for_url(at_path("/queues/orders-dlq/dead-letters/"))
        letters = page.locator("tbody tr")
        expect(letters).to_have_count(1)
        expect(letters).to_contain_text("orders")
        assert letters.locator("td.num").inner_text().strip() == "1"
        letters.get_by_role("checkbox").check()
        page.get_by_role("button", name="Redrive…").click()
        expect(page.locator("h1")).to_have_text("Redrive 1 dead letter")
        page.get_by_role("button", name="Redrive", exact=True).click()
        expect(page.locator("body")).to_contain_text("1 moved, 0 skipped.")

        # Back in its source queue, with its body and attributes; this time it is acknowledged.
        again = api.post("/v1/queues/orders/pull", json={}).json()["messages"]
        assert [(m["body"], m["attributes"]["region"]) for m in again] == [({"order": 42}, "eu")]
        acked = api.post("/v1/queues/orders/ack", json={"ack_ids": [again[0]["ack_id"]]})
        assert acked.json()["acked"] == 1
        assert api.get("/v1/queues/orders-dlq").json()["stats"]["available"] == 0

    # The audit page tells the story.
    page.goto("/audit/")
    trail = page.locator("main").inner_text()
    for action in ("queue.create", "key.create", "queue.redrive"):
        assert action in trail, action
    assert console_log.csp_violations() == []
    assert console_log.errors() == []
    page.context.close()


def test_invitation_roles_and_removal(site: Site, chromium: Any, console_log: ConsoleLog) -> None:
    """The owner invites a teammate as a viewer; the teammate joins from the emailed link and
    can change nothing; made a developer they can create a queue; removed, they are out."""
    owner = open_page(chromium, site.url, console_log, DESKTOP)
    sign_in(owner, site.owner)
    owner.goto("/members/")
    invite = owner.locator("form", has=owner.get_by_role("button", name="Send invitation"))
    invite.get_by_label("Email").fill(TEAMMATE)
    invite.get_by_label("Role").select_option("viewer")
    invite.get_by_role("button", name="Send invitation").click()
    expect(owner.locator("main")).to_contain_text(TEAMMATE)

    teammate = open_page(chromium, site.url, console_log, DESKTOP)
    teammate.goto(site.platform.link_sent_to(TEAMMATE, "/invitations/"))
    teammate.get_by_label("Choose a password").fill(PASSWORD)
    teammate.get_by_role("button", name="Create account and join").click()
    teammate.wait_for_url(at_path("/"))

    # A viewer: sees the queues, no button to change anything, and the forms refuse them.
    expect(teammate.locator("#queues")).to_contain_text("orders")
    assert teammate.get_by_role("link", name=re.compile("^New ")).count() == 0
    teammate.goto("/queues/orders/")
    assert teammate.get_by_role("link", name="Edit settings").count() == 0
    assert teammate.get_by_role("link", name="Delete").count() == 0
    assert teammate.get_by_role("link", name="Send a test message").count() == 0
    for path in (
        "/new/queue/",
        "/queues/orders/edit/",
        "/queues/orders/delete/",
        "/members/invite/",
    ):
        assert teammate.request.get(path).status in (403, 405), path
    before = settings_of(site, "orders")

    # Made a developer, they may create a queue.
    owner.goto("/members/")
    row = owner.locator("tr", has_text=TEAMMATE)
    row.get_by_label("Role").select_option("developer")
    row.get_by_role("button", name="Change role").click()
    expect(owner.locator("tr", has_text=TEAMMATE)).to_contain_text("developer")
    teammate.goto("/")
    teammate.get_by_role("link", name="New queue").click()
    teammate.get_by_label("Name").fill("by-teammate")
    teammate.get_by_role("button", name=re.compile("^Create")).click()
    assert site.tenant.http.get("/v1/queues/by-teammate").status_code == 200
    assert settings_of(site, "orders") == before

    # Removed, the teammate no longer reaches the tenant.
    owner.goto("/members/")
    owner.locator("tr", has_text=TEAMMATE).get_by_role("button", name="Remove").click()
    expect(owner.locator("main")).not_to_contain_text(TEAMMATE)
    teammate.goto("/queues/orders/")
    assert "orders" not in teammate.locator("main").inner_text()
    assert console_log.csp_violations() == []
    owner.context.close()
    teammate.context.close()
