"""The web console, mounted at the site root (after /v1/ and /admin/)."""

from django.urls import path

from console import views

app_name = "console"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("tenant/", views.TenantSwitchView.as_view(), name="tenant-switch"),
    path("queues/new/", views.QueueCreateView.as_view(), name="queue-create"),
    path("topics/new/", views.TopicCreateView.as_view(), name="topic-create"),
    path("subscriptions/new/", views.SubscriptionCreateView.as_view(), name="subscription-create"),
    path("keys/new/", views.KeyCreateView.as_view(), name="key-create"),
    path("keys/<str:key_id>/revoke/", views.KeyRevokeView.as_view(), name="key-revoke"),
    # each area of the console adds its routes below, one block per module
]
