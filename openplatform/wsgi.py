"""WSGI entry point, for tools that want one; production serves the ASGI app."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")

application = get_wsgi_application()
