"""The reference ASGI app: ``gunicorn bench.bare_app:application``.

It is the project's own ASGI entry point (openplatform.asgi: its routing, its handlers and
their middleware) in front of the settings of :mod:`bench.bare_settings`, whose URLconf has one
bare view. A request reaches the bare view along the same path a data-plane request takes to
its view, so the difference between the two is the view's own work.

With ``BENCH_BARE_HANDLER=django`` it is Django's standard ASGI handler with the full
middleware stack instead (the path of the console's requests), an informational reference.
"""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"

if os.environ.get("BENCH_BARE_HANDLER") == "django":
    from django.core.asgi import get_asgi_application

    application = get_asgi_application()
else:
    from openplatform.asgi import application  # noqa: F401 - what gunicorn serves
