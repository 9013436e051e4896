"""Pages outside the dashboard in a real browser: the API docs and signing out."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import ConsoleLog, Site, at_path, sign_in


def test_api_docs_list_the_operations(page: Any, console_log: ConsoleLog) -> None:
    """/v1/docs renders Swagger UI with the operations under the CSP, and "Try it out" sends a
    call (answered 401: no key was given)."""
    page.goto("/v1/docs")
    page.locator(".opblock").first.wait_for()
    paths = [text.strip() for text in page.locator(".opblock-summary-path").all_inner_texts()]
    assert "/v1/queues" in paths
    assert "/v1/queues/{queue}/messages" in paths

    page.locator("#operations-queues-queues_list").click()
    page.get_by_role("button", name="Try it out").first.click()
    with page.expect_response(lambda r: "/v1/queues" in r.url) as seen:
        page.get_by_role("button", name="Execute").first.click()
    assert seen.value.status == 401
    assert console_log.csp_violations() == []


def test_logout_get_offers_a_sign_out_button(page: Any, site: Site) -> None:
    """GET /logout/ is a page with a Sign out button, which ends the session."""
    sign_in(page, site.owner)
    page.goto("/logout/")
    page.locator("main").get_by_role("button", name="Sign out").click()
    page.wait_for_url(at_path("/login/"))
    page.goto("/")
    page.wait_for_url(at_path("/login/"))
    assert "next=" in page.url
