"""Local development: `./dev up` and `./dev manage`. Never used in production."""

from kernel.env import env
from openplatform.settings.base import *  # noqa: F403

DEBUG = env("DEBUG", True)
# A fixed, obviously-local key: dev data is throwaway and never reachable from outside.
SECRET_KEY = env("SECRET_KEY", "dev-only-insecure-key-never-used-in-production")
