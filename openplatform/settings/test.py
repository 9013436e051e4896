"""The test suite: real PostgreSQL and Redis from DATABASE_URL / REDIS_URL."""

from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from kernel.env import env
from openplatform.settings.base import *  # noqa: F403
from openplatform.settings.base import DATABASES, REDIS_URL

DEBUG = False
SECRET_KEY = "test-only-insecure-key"  # noqa: S105
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests run tasks in-process so a test sees their effect without a worker.
CELERY_TASK_ALWAYS_EAGER = True
# The pool is per process and tests open and close databases; plain connections are simpler.
DATABASES["default"]["OPTIONS"] = {}

# The suite empties its Redis database around every test, so it never shares one with a
# running platform: it uses database REDIS_TEST_DB (default 15) of the server REDIS_URL names.
# A URL that names no database is refused rather than guessed at: flushing "the" database of
# redis://host:6379 would empty database 0, where a platform keeps its messages.
_redis = urlsplit(REDIS_URL)
if not _redis.path.strip("/").isdigit():
    raise ImproperlyConfigured(
        f"REDIS_URL={REDIS_URL!r} names no database; the test settings need one such as "
        "redis://127.0.0.1:6379/0 (the suite then uses database REDIS_TEST_DB of that server)."
    )
REDIS_TEST_DB = env("REDIS_TEST_DB", 15)
REDIS_URL = urlunsplit(_redis._replace(path=f"/{REDIS_TEST_DB}"))
CELERY_BROKER_URL = REDIS_URL
# Mail stays in django.core.mail.outbox.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# In-process requests get static files from the apps' folders, as under ./dev up (there is no
# collectstatic in the suite; tests/openplatform/test_static.py serves a real one through the
# production settings).
SERVESTATIC_USE_FINDERS = True
