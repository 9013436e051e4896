"""The benchmark harness: ``python -m bench [--quick] [--workers N] [--out DIR]``.

It runs the platform the way production runs it (gunicorn serving the ASGI app with uvicorn
workers and the production settings) against the PostgreSQL and Redis of ``DATABASE_URL`` /
``REDIS_URL``, drives load over loopback from a separate client process, and measures each
figure right next to its reference in the same run: raw redis-py for batch publishing, a bare
Django view behind the same server configuration and entry point for single publishing.
Results go to ``bench/results/`` as JSON and a Markdown table. See bench/README.md for the
method.

Modules:

``runner``       the orchestration: settings, migrations, servers, measurements, report
``profiles``     the sizes of a full and a ``--quick`` run
``fixtures``     tenants, keys, queues and bulk fills, created in-process through Django
``servers``      gunicorn processes: start, readiness, clean stop (no orphans)
``client``       the load generator process (asyncio, raw HTTP/1.1 keep-alive, uvloop)
``httpclient``   the minimal HTTP/1.1 client it uses
``measure``      one function per measurement: runs client jobs and builds the result rows
``report``       machine facts, the JSON file and the Markdown table
``profiling``    ``--profile``: py-spy samples of the server during each measurement
``payloads``     the messages sent, and the engine's stream-entry layout for fills
``stats``        percentiles
``bare_app``     the reference server: the same settings and entry point, a one-view URLconf
                 (``bare_settings``, ``bare_urls``)
"""
