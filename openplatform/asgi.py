"""ASGI entry point: gunicorn (uvicorn workers) serves this in every environment."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")

application = get_asgi_application()
