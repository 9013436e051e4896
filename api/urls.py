"""The public REST API, v1. Paths are fixed by API.md."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api.views import fallback, invoices, keys, messages, queues, subscriptions, tenant, topics

urlpatterns = [
    path("keys", keys.KeyListCreateView.as_view(), name="keys"),
    path("keys/<str:key_id>", keys.KeyDetailView.as_view(), name="key-detail"),
    path("tenant", tenant.TenantView.as_view(), name="tenant"),
    path("usage", tenant.UsageView.as_view(), name="usage"),
    path("audit-events", tenant.AuditEventListView.as_view(), name="audit-events"),
    path("invoices", invoices.InvoiceListView.as_view(), name="invoices"),
    path("invoices/<uuid:invoice_id>.pdf", invoices.InvoicePdfView.as_view(), name="invoice-pdf"),
    path("invoices/<uuid:invoice_id>.csv", invoices.InvoiceCsvView.as_view(), name="invoice-csv"),
    path("invoices/<uuid:invoice_id>", invoices.InvoiceDetailView.as_view(), name="invoice-detail"),
    # the data plane (async)
    path("queues/<str:queue>/messages", messages.QueuePublishView.as_view(), name="queue-messages"),
    path("queues/<str:queue>/pull", messages.QueuePullView.as_view(), name="queue-pull"),
    path("queues/<str:queue>/ack", messages.QueueAckView.as_view(), name="queue-ack"),
    path("queues/<str:queue>/nack", messages.QueueNackView.as_view(), name="queue-nack"),
    path(
        "queues/<str:queue>/modify-deadline",
        messages.QueueModifyDeadlineView.as_view(),
        name="queue-modify-deadline",
    ),
    path("topics/<str:topic>/messages", messages.TopicPublishView.as_view(), name="topic-messages"),
    path(
        "subscriptions/<str:subscription>/pull",
        messages.SubscriptionPullView.as_view(),
        name="subscription-pull",
    ),
    path(
        "subscriptions/<str:subscription>/ack",
        messages.SubscriptionAckView.as_view(),
        name="subscription-ack",
    ),
    path(
        "subscriptions/<str:subscription>/nack",
        messages.SubscriptionNackView.as_view(),
        name="subscription-nack",
    ),
    path(
        "subscriptions/<str:subscription>/modify-deadline",
        messages.SubscriptionModifyDeadlineView.as_view(),
        name="subscription-modify-deadline",
    ),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("queues", queues.QueueListCreateView.as_view(), name="queues"),
    path("queues/<str:queue>", queues.QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<str:queue>/purge", queues.QueuePurgeView.as_view(), name="queue-purge"),
    path("queues/<str:queue>/redrive", queues.QueueRedriveView.as_view(), name="queue-redrive"),
    path("topics", topics.TopicListCreateView.as_view(), name="topics"),
    path("topics/<str:topic>", topics.TopicDetailView.as_view(), name="topic-detail"),
    path("subscriptions", subscriptions.SubscriptionListCreateView.as_view(), name="subscriptions"),
    path(
        "subscriptions/<str:subscription>",
        subscriptions.SubscriptionDetailView.as_view(),
        name="subscription-detail",
    ),
    path(
        "subscriptions/<str:subscription>/seek",
        subscriptions.SubscriptionSeekView.as_view(),
        name="subscription-seek",
    ),
    re_path(r"^(?P<rest>.*)$", fallback.not_found),
]
