"""The kernel: what every layer of OpenPlatform stands on and that stands on no app.

Problem errors (:mod:`kernel.errors`), reading the environment (:mod:`kernel.env`), the Redis
client and its lanes (:mod:`kernel.redis_client`), every Redis key and hash field
(:mod:`kernel.redis_keys`), Lua scripts (:mod:`kernel.redis_scripts`), the hot cache
(:mod:`kernel.hotcache`) and every limit and default of the public contract
(:mod:`kernel.limits`).

The kernel imports Django's settings and third-party libraries only: never ``tenants``,
``queues``, ``api``, the console or the composition root (``openplatform``). import-linter
holds it to that in ``./dev lint``.
"""
