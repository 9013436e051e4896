"""The reference server's settings: the production settings with one change, ROOT_URLCONF
pointing at :mod:`bench.bare_urls`. Same middleware, same apps, same database and cache."""

from openplatform.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
