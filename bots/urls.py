"""Bot routes (mounted under /api/)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from bots.api import views

router = SimpleRouter()
router.register("bots", views.BotViewSet, basename="bot")
router.register("deals", views.DealViewSet, basename="deal")
router.register("orders", views.OrderViewSet, basename="order")
router.register("exchange-accounts", views.ExchangeAccountViewSet, basename="exchange-account")

urlpatterns = [
    path("bots/<int:pk>/start", views.BotViewSet.as_view({"post": "start"}), name="bot-start"),
    path("bots/<int:pk>/pause", views.BotViewSet.as_view({"post": "pause"}), name="bot-pause"),
    path("deals/<int:pk>/close", views.DealViewSet.as_view({"post": "close"}), name="deal-close"),
    *router.urls,
]
