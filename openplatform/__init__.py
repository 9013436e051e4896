"""OpenPlatform: hosted message queues as a service."""

from openplatform.celery import app as celery_app

__all__ = ["celery_app"]
