"""gunicorn settings for the ASGI app: ``gunicorn openplatform.asgi:application -c
deploy/gunicorn.conf.py``.

Every value can be overridden on the command line (``./dev up`` passes ``--bind``) or through
the environment variables read here. Each worker is one uvicorn event loop, so a worker holds
thousands of waiting long polls; add workers for CPU, not for concurrency.
"""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not an integer") from exc


def _default_workers() -> int:
    # The classic 2 x cores + 1, capped: past a dozen event loops per machine the extra
    # processes only add memory and PostgreSQL connections (DATABASE_POOL_MAX each).
    return min(2 * (os.cpu_count() or 1) + 1, 12)


wsgi_app = "openplatform.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
workers = _int("WEB_CONCURRENCY", _default_workers())
# All interfaces by default: in a container or behind nginx / a load balancer.
bind = [os.environ.get("BIND", "0.0.0.0:8000")]

# A long poll holds its request for up to 20 s: the worker timeout (heartbeat) and the
# graceful shutdown must both outlast it, so a deploy lets waiting pulls finish.
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Longer than nginx's upstream keepalive_timeout (see deploy/nginx.conf) so the proxy, not
# gunicorn, closes idle connections and never sends on one that was just closed.
keepalive = _int("GUNICORN_KEEPALIVE", 75)

# Recycle workers now and then so slow leaks in any library never accumulate; the jitter
# keeps them from restarting together.
max_requests = _int("GUNICORN_MAX_REQUESTS", 1_000_000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 100_000)

# Access logs are off by default (the API's hot path is too busy to log every request; nginx
# or the load balancer logs them). ACCESS_LOG=- sends them to stdout.
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Behind nginx or a load balancer: trust X-Forwarded-* from these addresses only.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# The workers' heartbeat files: on tmpfs, because a container's /tmp may sit on an overlay
# filesystem whose stalls make the arbiter kill healthy workers.
# gunicorn creates them with mkstemp, so a shared directory is safe.
_TMPFS = "/dev/shm"  # noqa: S108
worker_tmp_dir = _TMPFS if os.path.isdir(_TMPFS) else None

# Imports happen in each worker after fork: PostgreSQL pools, Redis connections and the hot
# cache are per process and must never be shared across a fork.
preload_app = False
