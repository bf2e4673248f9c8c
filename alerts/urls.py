"""Alert routes (mounted under /api/)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from alerts.api import views

router = SimpleRouter()
router.register("alerts", views.AlertViewSet, basename="alert")
router.register("notifications", views.NotificationViewSet, basename="notification")

urlpatterns = [
    # Before the router's alerts/<id>/ so that "preview" is never taken for an id.
    path("alerts/preview", views.AlertPreviewView.as_view(), name="alert-preview"),
    path("webhook-secret", views.WebhookSecretView.as_view(), name="webhook-secret"),
    path(
        "webhook-secret/rotate",
        views.WebhookSecretRotateView.as_view(),
        name="webhook-secret-rotate",
    ),
    *router.urls,
]
