"""Production: every secret from the environment, HTTPS everywhere, no debug.

Start-up stops with a clear message when SECRET_KEY is missing, short or a known dev value.
"""

from django.core.exceptions import ImproperlyConfigured

from kernel.env import env
from openplatform.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env("SECRET_KEY", "")
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or "insecure" in SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters in production "
        '(python -c "import secrets; print(secrets.token_urlsafe(64))").'
    )

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT", True)
# Load balancers probe these over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# collectstatic writes each file under a name with its content's hash (served with a far-future
# Cache-Control: immutable) plus gzip and brotli copies that servestatic picks by
# Accept-Encoding. Templates then need the manifest: run collectstatic before serving.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
}
