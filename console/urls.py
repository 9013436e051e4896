"""The web console, mounted at the site root (after /v1/ and /admin/)."""

from django.urls import include, path

from console import insights, views, workbench

app_name = "console"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("tenant/", views.TenantSwitchView.as_view(), name="tenant-switch"),
    path("new/queue/", views.QueueCreateView.as_view(), name="queue-create"),
    path("new/topic/", views.TopicCreateView.as_view(), name="topic-create"),
    path("new/subscription/", views.SubscriptionCreateView.as_view(), name="subscription-create"),
    path("keys/new/", views.KeyCreateView.as_view(), name="key-create"),
    path("keys/<str:key_id>/revoke/", views.KeyRevokeView.as_view(), name="key-revoke"),
    path("keys/<str:key_id>/created/", views.KeyCreatedView.as_view(), name="key-created"),
    *workbench.urlpatterns,  # /queues/<name>/messages/, dead-letters/, topic log, seek
    path("", include("console.resources")),  # queue, topic and subscription pages
    path("", include("console.accounts")),  # sign-up, account, members, invitations
    path("", include("console.billing")),  # invoices and the running cost
    path("usage/", insights.UsageView.as_view(), name="usage"),
    path("usage/chart.svg", insights.UsageChartView.as_view(), name="usage-chart"),
    path("audit/", insights.AuditView.as_view(), name="audit"),
    path(
        "metrics/<str:kind>/<str:name>/<str:chart>.svg",
        insights.ResourceChartView.as_view(),
        name="resource-chart",
    ),
    # each area of the console adds its routes below, one block per module
]
