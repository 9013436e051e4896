"""Static files (the admin's, Swagger UI's, the console's) are served by every web process,
with or without nginx in front: /v1/docs and /admin/ work under `./dev up`."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/admin/css/base.css", "text/css"),
        ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", "text/javascript"),
    ],
)
@override_settings(WHITENOISE_USE_FINDERS=True)  # as under DEBUG; production serves collected files
def test_static_files_are_served(path: str, content_type: str) -> None:
    """The assets the admin and /v1/docs load answer 200 with their media type."""
    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    assert b"".join(response.streaming_content)
