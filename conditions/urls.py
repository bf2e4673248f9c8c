"""Condition registry routes, at the seed paths (mounted under /api/)."""

from __future__ import annotations

from django.urls import path

from conditions.api import views

urlpatterns = [
    path("conditions/register", views.RegisterConditionView.as_view(), name="condition-register"),
    path("conditions/subscribe", views.SubscribeView.as_view(), name="condition-subscribe"),
    path(
        "conditions/subscribe/<int:subscription_id>",
        views.SubscriptionDetailView.as_view(),
        name="condition-subscription",
    ),
    path(
        "conditions/user/subscriptions",
        views.UserSubscriptionsView.as_view(),
        name="condition-user-subscriptions",
    ),
    path(
        "conditions/<str:condition_id>/status",
        views.ConditionStatusView.as_view(),
        name="condition-status",
    ),
]
