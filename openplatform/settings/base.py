"""Settings every environment shares. Values that differ come from the environment."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from kernel.env import env

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env("SECRET_KEY", "")
DEBUG = env("DEBUG", False)
ALLOWED_HOSTS = env("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"], cast=list)
CSRF_TRUSTED_ORIGINS: list[str] = env("CSRF_TRUSTED_ORIGINS", [], cast=list)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "tenants",
    "queues",
    "billing",
    "api",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lock-out noted during the view into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "openplatform.urls"
ASGI_APPLICATION = "openplatform.asgi.application"
WSGI_APPLICATION = "openplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores ------------------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/openplatform")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
# psycopg 3's pool: each process keeps a few warm connections, so a request never pays for a
# new PostgreSQL connection and the ASGI server does not leak one per thread.
DATABASES["default"]["OPTIONS"] = {
    "pool": {
        "min_size": env("DATABASE_POOL_MIN", 1),
        "max_size": env("DATABASE_POOL_MAX", 10),
        "timeout": 10,
    },
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# The longest a request waits on Redis: connecting, a pool or lane slot, and the reply. Past it
# the request answers 503 (Retry-After) instead of hanging on a stopped or unreachable server.
# Keep it at most 5 s: a load balancer's health check and a client's retry need a quick answer.
REDIS_TIMEOUT_SECONDS = env("REDIS_TIMEOUT_SECONDS", 3.0)

AUTH_USER_MODEL = "tenants.User"
# django-axes first: it refuses a locked-out account or address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Accounts: email, sign-up, invitations, two-factor ------------------------------------------
# Outgoing mail (verification, password reset, invitations). base: SMTP from the environment;
# dev prints to the terminal, tests keep mail in memory.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env("EMAIL_TIMEOUT", 10)
# The folder of django.core.mail.backends.filebased (one file per connection), when that is the
# backend: the system tests read the platform's mail from there.
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", None, cast=str)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "OpenPlatform <noreply@localhost>")
# Anyone may sign up (creating a tenant on the default plan) unless this is off.
SIGNUP_OPEN = env("SIGNUP_OPEN", True)
# Sign-ups per client address (IPv6: per /64) per hour; 0 turns the limit off. A verification
# email is re-sent to one account at most once per SIGNUP_RESEND_SECONDS, so neither form can
# be used to flood someone's mailbox.
SIGNUPS_PER_ADDRESS_PER_HOUR = env("SIGNUPS_PER_ADDRESS_PER_HOUR", 5)
SIGNUP_RESEND_SECONDS = env("SIGNUP_RESEND_SECONDS", 300)
# How long an email verification link and an invitation link work.
EMAIL_VERIFICATION_MAX_AGE_SECONDS = env("EMAIL_VERIFICATION_MAX_AGE_SECONDS", 3 * 86400)
INVITATION_TTL_SECONDS = env("INVITATION_TTL_SECONDS", 7 * 86400)
PASSWORD_RESET_TIMEOUT = env("PASSWORD_RESET_TIMEOUT", 3600)
# The issuer an authenticator app shows beside the account.
OTP_TOTP_ISSUER = env("OTP_TOTP_ISSUER", "OpenPlatform")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files are served by the web processes themselves, at the ASGI layer
# (openplatform/asgi.py, servestatic): from the apps' folders and static/ in DEBUG, from the
# files `collectstatic` wrote to STATIC_ROOT otherwise (production: fingerprinted and
# compressed, see settings/production.py).
STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]

# A batch of 100 messages at the largest tenant limit (256 KiB each, base64-encoded) fits;
# anything larger is answered 413 before it is read into memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = env("MAX_REQUEST_BYTES", 40 * 1024 * 1024)

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ApiKeyAuthentication",
        "api.authentication.ConsoleSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasTenant"],
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.FastJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.PlatformAutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "OpenPlatform API",
    "DESCRIPTION": (
        "Hosted message queues: topics, queues and subscriptions over REST. Authenticate with "
        "`Authorization: Bearer op_<prefix>_<secret>`. Every error is application/problem+json."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "op_<prefix>_<secret>"}
        }
    },
    "SECURITY": [{"ApiKey": []}],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.problem_media_type",
    ],
    "AUTHENTICATION_WHITELIST": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI's files come from the sidecar package, so /v1/docs works with no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Product limits ---------------------------------------------------------------------------
# How long a process trusts its own copy of an API key, a tenant's limits or a name → stream
# mapping before it asks Redis again. Revocation reaches every process within this time.
HOT_CACHE_TTL_SECONDS = env("HOT_CACHE_TTL_SECONDS", 0.5)
# How many data-plane requests (publish, pull, ack, nack, modify-deadline) of one tenant a
# worker process serves at once; more wait their turn in that tenant's line (api.admission),
# so a tenant at its limit does not take the event loop from the others. Long polls are not
# counted while they wait.
DATA_PLANE_TENANT_CONCURRENCY = env("DATA_PLANE_TENANT_CONCURRENCY", 4)

# --- Abuse limits -----------------------------------------------------------------------------
# Whose address a request is: REMOTE_ADDR, unless that is one of these proxies (addresses or
# networks); then the nearest X-Forwarded-For hop that is not. Empty (the default) trusts no
# header. Behind the shipped gunicorn config leave it empty: uvicorn already puts the client
# into REMOTE_ADDR for gunicorn's FORWARDED_ALLOW_IPS.
TRUSTED_PROXIES: list[str] = env("TRUSTED_PROXIES", [], cast=list)
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES: {_proxy!r} is not an address or network"
        ) from _exc

# Refused API keys (unknown, revoked, expired, malformed) per client address (IPv6: per /64)
# before the address is answered 429 rate_limited with Retry-After until the window ends.
# 0 turns a window off. A valid key from that address is still served.
AUTH_FAILURES_PER_SECOND = env("AUTH_FAILURES_PER_SECOND", 10)
AUTH_FAILURES_PER_MINUTE = env("AUTH_FAILURES_PER_MINUTE", 100)

# Console and admin sign-in (django-axes, database handler: lock-outs survive a Redis flush,
# operators see and clear them in the admin under "Axes"). After LOGIN_FAILURE_LIMIT failed
# sign-ins within LOGIN_COOLOFF_SECONDS for one account (from anywhere) or from one address
# (to any account), that account or address is refused, even with the right password, until
# the cool-off has passed since the last counted failure. Attempts during a lock-out do not
# extend it. Each lock-out is logged and written to the audit trail of the account's tenants.
LOGIN_FAILURE_LIMIT = env("LOGIN_FAILURE_LIMIT", 5)
LOGIN_COOLOFF_SECONDS = env("LOGIN_COOLOFF_SECONDS", 900)
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_COOLOFF_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each one on its own
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False  # a success must not wipe an address's failures at other accounts
AXES_USERNAME_FORM_FIELD = "username"  # the login forms' field (the email address)
AXES_USERNAME_CALLABLE = "console.lockout.login_username"
AXES_CLIENT_IP_CALLABLE = "tenants.principals.request_address"
AXES_LOCKOUT_CALLABLE = "console.lockout.lockout_response"

# Content-Security-Policy on every page of the full stack (django-csp). Nothing inline runs or
# styles without the request's nonce; nothing loads from another origin; no page can be framed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],  # Swagger UI's stylesheet draws its icons as data: URLs
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Every task declares its own time_limit and soft_time_limit (soft < hard): Celery refuses to
# send a task whose soft limit exceeds its hard limit, so a global soft limit above a task's
# hard limit would stop beat from sending it at all. These are the fallbacks for tasks that
# declare none.
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How often beat runs each piece of background work (seconds). Deployments keep the defaults;
# the system tests shorten them so a run sees every task within seconds.
HOUSEKEEPING_INTERVAL_SECONDS = env("HOUSEKEEPING_INTERVAL_SECONDS", 2.0)
KEY_LAST_USED_FLUSH_SECONDS = env("KEY_LAST_USED_FLUSH_SECONDS", 60.0)
RETENTION_TRIM_SECONDS = env("RETENTION_TRIM_SECONDS", 60.0)
POSITIONS_SNAPSHOT_SECONDS = env("POSITIONS_SNAPSHOT_SECONDS", 30.0)
USAGE_ROLLUP_SECONDS = env("USAGE_ROLLUP_SECONDS", 60.0)
# Months of hourly usage kept in PostgreSQL before the current one (tenants.usage_trim).
USAGE_KEEP_MONTHS = env("USAGE_KEEP_MONTHS", 13)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "flush-key-last-used": {
        "task": "tenants.flush_key_last_used",
        "schedule": KEY_LAST_USED_FLUSH_SECONDS,
    },
    "queues-housekeeping": {
        "task": "queues.housekeeping",
        "schedule": HOUSEKEEPING_INTERVAL_SECONDS,
    },
    "queues-retention-trim": {"task": "queues.retention_trim", "schedule": RETENTION_TRIM_SECONDS},
    "queues-snapshot-positions": {
        "task": "queues.snapshot_positions",
        "schedule": POSITIONS_SNAPSHOT_SECONDS,
    },
    "tenants-usage-rollup": {"task": "tenants.usage_rollup", "schedule": USAGE_ROLLUP_SECONDS},
}
METRICS_SAMPLE_SECONDS = env("METRICS_SAMPLE_SECONDS", 60.0)
CELERY_BEAT_SCHEDULE["queues-sample-metrics"] = {
    "task": "queues.sample_metrics",
    "schedule": METRICS_SAMPLE_SECONDS,
}
CELERY_BEAT_SCHEDULE["tenants-usage-trim"] = {
    "task": "tenants.usage_trim",
    "schedule": env("USAGE_TRIM_SECONDS", 3600.0),
}

# Bills the previous month once it has ended (billing.tasks: a no-op when already billed).
BILLING_RUN_SECONDS = env("BILLING_RUN_SECONDS", 86400.0)
CELERY_BEAT_SCHEDULE["billing-run"] = {
    "task": "billing.run_previous_month",
    "schedule": BILLING_RUN_SECONDS,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.request": {"level": "ERROR"}},
}
