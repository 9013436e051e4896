"""Static files as production serves them: gunicorn running openplatform.asgi with the
production settings (the system suite's ``platform``) after a real ``collectstatic``, so
servestatic answers at the ASGI layer from the manifest: fingerprinted names cached for ten
years, brotli and gzip variants, /favicon.ico, and the 404 page instead of Django's debug page."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import collected_static  # noqa: F401
from tests.system.conftest import PYTHON, ROOT, Platform, platform  # noqa: F401

pytestmark = pytest.mark.django_db

FAR_FUTURE = "max-age=315360000, public, immutable"
FAVICON = (ROOT / "static" / "favicon.svg").read_bytes()


def hashed(root: Path, name: str) -> str:
    """The URL collectstatic gave ``name`` (from its manifest)."""
    manifest = json.loads((root / "staticfiles.json").read_text())
    return f"/static/{manifest['paths'][name]}"


def test_production_settings_have_no_debug() -> None:
    """The production settings load with DEBUG off, whatever DEBUG the environment has."""
    done = subprocess.run(  # noqa: S603
        [PYTHON, "-c", "from django.conf import settings; print(settings.DEBUG)"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "openplatform.settings.production",
            "SECRET_KEY": "k" * 20 + "abcdefghij" * 4,
            "DEBUG": "true",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == "False\n"


def test_fingerprinted_file_is_cached_for_ten_years(
    platform: Platform,  # noqa: F811
    collected_static: Path,  # noqa: F811
) -> None:
    """The manifest's name of the favicon answers the file, immutable for ten years."""
    url = hashed(collected_static, "favicon.svg")
    assert url != "/static/favicon.svg"

    response = httpx.get(platform.url + url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == FAR_FUTURE
    assert response.content == FAVICON


def test_plain_name_is_served_with_a_short_cache(platform: Platform) -> None:  # noqa: F811
    """The unhashed name still answers (for /favicon.ico and old links), cached one minute."""
    response = httpx.get(f"{platform.url}/static/favicon.svg")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "max-age=60, public"
    assert response.content == FAVICON


def test_favicon_ico_answers_the_brand_mark(platform: Platform) -> None:  # noqa: F811
    """/favicon.ico, which browsers ask for on their own, answers the SVG mark."""
    response = httpx.get(f"{platform.url}/favicon.ico")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content == FAVICON


def test_brotli_variant_for_a_client_that_accepts_it(
    platform: Platform,  # noqa: F811
    collected_static: Path,  # noqa: F811
) -> None:
    """The admin's stylesheet comes compressed with brotli when asked, gzip otherwise."""
    url = platform.url + hashed(collected_static, "admin/css/base.css")

    br = httpx.get(url, headers={"Accept-Encoding": "br"})
    gz = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})

    assert br.status_code == gz.status_code == plain.status_code == 200
    assert br.headers["content-encoding"] == "br"
    assert gz.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert br.headers["content-type"] == 'text/css; charset="utf-8"'
    assert br.headers["vary"] == "Accept-Encoding"
    assert br.content == gz.content == plain.content  # httpx decodes both
    assert int(br.headers["content-length"]) < int(plain.headers["content-length"])


def test_missing_static_file_and_page_are_the_404_page(platform: Platform) -> None:  # noqa: F811
    """An unknown static file or page answers templates/404.html, not Django's debug page."""
    for path in ("/static/no-such-file.css", "/no-such-page/"):
        response = httpx.get(platform.url + path, headers={"Accept": "text/html"})

        assert response.status_code == 404
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert f"There is nothing at <code>{path}</code>" in response.text
        assert "URLconf" not in response.text


def test_docs_and_admin_load_their_assets(
    platform: Platform,  # noqa: F811
    collected_static: Path,  # noqa: F811
) -> None:
    """/v1/docs links fingerprinted assets that answer 200, and so do the admin's styles
    (its pages are for signed-in staff only; /admin/login/ is the console's form)."""
    for name in ("admin/css/base.css", "admin/css/login.css"):
        response = httpx.get(platform.url + hashed(collected_static, name))
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == FAR_FUTURE, name
    for page, wanted in (("/v1/docs", ".js"),):
        html = httpx.get(platform.url + page)
        assert html.status_code == 200
        assets = [
            part.split('"')[0]
            for part in html.text.split('="/static/')[1:]
            if part.split('"')[0].endswith(wanted)
        ]
        assert assets, page
        for asset in assets:
            response = httpx.get(f"{platform.url}/static/{asset}")
            assert response.status_code == 200, asset
            assert response.headers["cache-control"] == FAR_FUTURE, asset


def test_static_files_are_served_while_a_long_poll_waits(platform: Platform) -> None:  # noqa: F811
    """Static requests are answered on the event loop next to a waiting long poll: every one
    comes back while the poll (on an empty queue) is still waiting."""
    t = platform.tenant("Static Poll")
    assert t.http.post("/v1/queues", json={"name": "idle"}).status_code == 201
    result: list[int] = []

    def long_poll() -> None:
        answer = t.http.post("/v1/queues/idle/pull", json={"wait_seconds": 5}, timeout=30)
        result.append(answer.status_code)

    poller = threading.Thread(target=long_poll)
    poller.start()
    try:
        with httpx.Client(base_url=platform.url) as client:
            statuses = [client.get("/static/favicon.svg").status_code for _ in range(20)]
        still_waiting = poller.is_alive()
    finally:
        poller.join()
    assert statuses == [200] * 20
    assert still_waiting
    assert result == [200]
