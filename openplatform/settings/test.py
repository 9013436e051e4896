"""The test suite: real PostgreSQL and Redis from DATABASE_URL / REDIS_URL."""

from openplatform.settings.base import *  # noqa: F403
from openplatform.settings.base import DATABASES, REDIS_URL, env

DEBUG = False
SECRET_KEY = "test-only-insecure-key"  # noqa: S105
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests run tasks in-process so a test sees their effect without a worker.
CELERY_TASK_ALWAYS_EAGER = True
# The pool is per process and tests open and close databases; plain connections are simpler.
DATABASES["default"]["OPTIONS"] = {}

# The suite empties its Redis database around every test, so it never shares one with a
# running platform: the database number comes from REDIS_TEST_DB (default 15).
_redis = REDIS_URL.rsplit("/", 1)
REDIS_URL = f"{_redis[0]}/{env('REDIS_TEST_DB', 15)}" if _redis[-1].isdigit() else REDIS_URL
CELERY_BROKER_URL = REDIS_URL
