"""The Celery application: the worker and beat processes run the platform's background work."""

import os

from celery import Celery

# Fail closed: with no settings module named, the production settings load, and they refuse to
# start without a real SECRET_KEY. `./dev` names the dev settings explicitly. This module is
# imported by openplatform/__init__.py, so its default is every entry point's default.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.production")

app = Celery("openplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
