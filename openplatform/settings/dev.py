"""Local development: `./dev up` and `./dev manage`. Never used in production."""

from kernel.env import env
from openplatform.settings.base import *  # noqa: F403

DEBUG = env("DEBUG", True)
# A fixed, obviously-local key: dev data is throwaway and never reachable from outside.
SECRET_KEY = env("SECRET_KEY", "dev-only-insecure-key-never-used-in-production")
# DEBUG serves static files from the finders and looks each one up again per request
# (servestatic's autorefresh), so an edited stylesheet shows on reload without collectstatic.
SERVESTATIC_USE_FINDERS = DEBUG
SERVESTATIC_AUTOREFRESH = DEBUG
# Mail (verification and reset links, invitations) is printed by `./dev up` instead of sent.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
