"""The Celery application: the worker and beat processes run the platform's background work."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings.dev")

app = Celery("openplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
