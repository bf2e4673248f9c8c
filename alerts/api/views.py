"""Alerts API: CRUD, pause and resume, triggers, previews, notifications,
and the webhook secret. Every query is the requesting user's."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import services
from alerts.models import Alert, AlertStatus, Notification, WebhookSecret
from tradeeon.api_errors import Conflict

from .serializers import (
    AlertFilterSerializer,
    AlertPreviewResultSerializer,
    AlertPreviewSerializer,
    AlertSerializer,
    AlertTriggerSerializer,
    MarkedReadSerializer,
    NotificationFilterSerializer,
    NotificationSerializer,
    WebhookSecretSerializer,
    WebhookSecretStateSerializer,
)


@extend_schema_view(list=extend_schema(parameters=[AlertFilterSerializer]))
class AlertViewSet(viewsets.ModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = Alert.objects.none()
    serializer_class = AlertSerializer

    def get_queryset(self):
        alerts = Alert.objects.filter(user=self.request.user)
        if self.action == "list":
            filters = AlertFilterSerializer(data=self.request.query_params.dict())
            filters.is_valid(raise_exception=True)
            alerts = alerts.filter(**filters.validated_data)
        return alerts.order_by("-created_at", "-pk")

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        # The page's condition ids in one query of the link table, rather than
        # a Condition object per link.
        links = Alert.conditions.through.objects.filter(alert__in=page).values_list(
            "alert_id", "condition_id"
        )
        condition_ids: dict[int, list[str]] = {alert.pk: [] for alert in page}
        for alert_id, condition_id in links:
            condition_ids[alert_id].append(condition_id)
        serializer = self.get_serializer(
            page,
            many=True,
            context={**self.get_serializer_context(), "condition_ids": condition_ids},
        )
        return self.get_paginated_response(serializer.data)

    def perform_create(self, serializer: AlertSerializer) -> None:
        alert = Alert(user=self.request.user, **serializer.validated_data)
        services.save_user_alert(alert)
        serializer.instance = alert

    def perform_update(self, serializer: AlertSerializer) -> None:
        alert = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(alert, name, value)
        services.save_user_alert(alert)

    @extend_schema(request=None, responses={200: AlertSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        """Stop evaluating the alert until it is resumed."""
        alert = self.get_object()
        if alert.status not in (AlertStatus.ACTIVE, AlertStatus.PAUSED):
            raise Conflict(f"a {alert.status} alert is not evaluated: there is nothing to pause")
        services.set_status(alert, AlertStatus.PAUSED)
        return Response(self.get_serializer(alert).data)

    @extend_schema(request=None, responses={200: AlertSerializer, 409: None})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        """Evaluate the alert again (a triggered `once` alert is re-armed)."""
        alert = self.get_object()
        if alert.expires_at is not None and alert.expires_at <= timezone.now():
            raise Conflict("the alert has expired: set a later expires_at first")
        services.set_status(alert, AlertStatus.ACTIVE)
        return Response(self.get_serializer(alert).data)

    @extend_schema(responses=AlertTriggerSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=AlertTriggerSerializer)
    def triggers(self, request: Request, pk: str) -> Response:
        """When the alert fired, newest first, with the values at each bar."""
        alert = self.get_object()
        page = self.paginate_queryset(alert.triggers.order_by("-bar_open_time", "-pk"))
        return self.get_paginated_response(AlertTriggerSerializer(page, many=True).data)


class AlertPreviewView(APIView):
    throttle_scope = "preview"

    @extend_schema(
        operation_id="alerts_preview",
        request=AlertPreviewSerializer,
        responses={200: AlertPreviewResultSerializer, 503: None},
        description="Backtest an alert over the latest closed candles of its symbol: "
        "when it would have fired, with the values at each of those bars. Nothing is saved.",
    )
    def post(self, request: Request) -> Response:
        serializer = AlertPreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        raw = {
            "symbol": given["symbol"],
            "base_timeframe": given["base_timeframe"],
            "conditionConfig": given["conditionConfig"],
            "fireMode": given["fireMode"],
        }
        result = services.preview_alert(raw, bars=given["bars"])
        return Response(AlertPreviewResultSerializer(result).data)


@extend_schema_view(list=extend_schema(parameters=[NotificationFilterSerializer]))
class NotificationViewSet(viewsets.ReadOnlyModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = Notification.objects.none()
    serializer_class = NotificationSerializer

    def get_queryset(self):
        notifications = Notification.objects.filter(user=self.request.user).select_related(
            "trigger"
        )
        if self.action == "list":
            filters = NotificationFilterSerializer(data=self.request.query_params.dict())
            filters.is_valid(raise_exception=True)
            unread = filters.validated_data.get("unread")
            if unread is not None:
                notifications = notifications.filter(read_at__isnull=unread)
        return notifications.order_by("-created_at", "-pk")

    @extend_schema(request=None, responses=NotificationSerializer)
    @action(detail=True, methods=["post"])
    def read(self, request: Request, pk: str) -> Response:
        """Mark one notification read."""
        notification = self.get_object()
        services.mark_notifications_read(request.user, [notification.pk])
        notification.refresh_from_db()
        return Response(self.get_serializer(notification).data)

    @extend_schema(request=None, responses=MarkedReadSerializer)
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request: Request) -> Response:
        """Mark every unread notification read."""
        marked = services.mark_notifications_read(request.user)
        return Response(MarkedReadSerializer({"marked": marked}).data)


class WebhookSecretView(APIView):
    @extend_schema(
        operation_id="webhook_secret_state",
        responses=WebhookSecretStateSerializer,
        description="Whether you have a webhook signing secret; the secret itself is "
        "only ever shown by rotate.",
    )
    def get(self, request: Request) -> Response:
        secret = WebhookSecret.objects.filter(user=request.user).only("rotated_at").first()
        state = {"exists": secret is not None, "rotated_at": secret and secret.rotated_at}
        return Response(WebhookSecretStateSerializer(state).data)


class WebhookSecretRotateView(APIView):
    @extend_schema(
        operation_id="webhook_secret_rotate",
        request=None,
        responses={
            200: OpenApiResponse(
                WebhookSecretSerializer,
                description="The new secret, shown this once; the previous one stops "
                "signing at once.",
            )
        },
    )
    def post(self, request: Request) -> Response:
        secret = services.rotate_webhook_secret(request.user)
        body = {"secret": secret.secret, "rotated_at": secret.rotated_at}
        return Response(WebhookSecretSerializer(body).data, status=status.HTTP_200_OK)
