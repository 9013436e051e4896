"""Top-level routes: the REST API under /v1, health probes, the operators' admin, the console."""

from django.contrib import admin
from django.urls import include, path

from api.views.health import healthz, readyz
from console.views import AdminLoginView

handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("v1/", include("api.urls")),
    # Operators sign in like everyone else, through the console's form: its lock-out and
    # two-factor step hold for the admin too (the admin's own form asks only for a password).
    path("admin/login/", AdminLoginView.as_view(), name="admin-login"),
    path("admin/", admin.site.urls),
    path("", include("console.urls")),
]
