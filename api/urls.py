"""The public REST API, v1. Paths are fixed by API.md."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api.views import fallback, keys, tenant

urlpatterns = [
    path("keys", keys.KeyListCreateView.as_view(), name="keys"),
    path("keys/<str:key_id>", keys.KeyDetailView.as_view(), name="key-detail"),
    path("tenant", tenant.TenantView.as_view(), name="tenant"),
    path("usage", tenant.UsageView.as_view(), name="usage"),
    path("audit-events", tenant.AuditEventListView.as_view(), name="audit-events"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^(?P<rest>.*)$", fallback.not_found),
]
