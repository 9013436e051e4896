"""Static files (the admin's, Swagger UI's) under `./dev up`: in development (DEBUG) the web
processes serve them from the apps' folders; in production nginx serves the collected files
and the application answers 404 for them."""

from __future__ import annotations

import httpx
import pytest
from django.test import override_settings

from openplatform.asgi import application

ASSETS = [
    ("/static/admin/css/base.css", "text/css"),
    ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", "text/javascript"),
]


async def get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.get(path)


@pytest.mark.parametrize(("path", "content_type"), ASSETS)
async def test_development_serves_static_files(path: str, content_type: str) -> None:
    """With DEBUG on, the assets the admin and /v1/docs load answer 200 with their type."""
    with override_settings(DEBUG=True):
        response = await get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert response.content


@pytest.mark.django_db
async def test_production_leaves_static_files_to_nginx() -> None:
    """With DEBUG off the application serves no static file (deploy/nginx.conf does)."""
    response = await get(ASSETS[0][0])

    assert response.status_code == 404
