"""Condition registry API (the seed paths under /api/conditions/)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conditions import services
from conditions.engine.errors import ConditionError
from conditions.models import ConditionSubscription

from .serializers import (
    ConditionStatusSerializer,
    RegisterConditionSerializer,
    RegisteredConditionSerializer,
    SubscribedSerializer,
    SubscribeSerializer,
    SubscriptionFilterSerializer,
    SubscriptionSerializer,
    valid_condition_id,
)

REGISTER_EXAMPLES = [
    OpenApiExample(
        "registry shape",
        {
            "symbol": "BTCUSDT",
            "timeframe": "1h",
            "indicator": "RSI",
            "operator": "crosses_below",
            "value": 30,
            "period": 14,
        },
    ),
    OpenApiExample(
        "alert shape, wrapped with its symbol and timeframe",
        {
            "symbol": "BTCUSDT",
            "timeframe": "1h",
            "condition": {
                "type": "indicator",
                "indicator": "RSI",
                "component": "RSI",
                "operator": "<",
                "compareWith": "value",
                "compareValue": 30,
                "timeframe": "same",
                "settings": {"length": 14},
            },
        },
    ),
    OpenApiExample(
        "short shape",
        {"symbol": "ETHBTC", "timeframe": "5m", "indicator": "MACD", "operator": "crosses_above"},
    ),
]


class RegisterConditionView(APIView):
    throttle_scope = "register"

    @extend_schema(
        operation_id="conditions_register",
        request=OpenApiTypes.OBJECT,
        examples=REGISTER_EXAMPLES,
        responses={201: RegisteredConditionSerializer, 200: RegisteredConditionSerializer},
        description="Register a condition in any input shape (CONDITIONS.md section 1). "
        "201 with status `registered` when it is new, 200 with `existing` when an equal "
        "condition was registered before: equal conditions share one condition_id.",
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterConditionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        try:
            condition, created = services.register_condition(
                given["raw"], symbol=given["symbol"], timeframe=given["timeframe"]
            )
        except ConditionError as exc:
            raise exc.within(given["field_prefix"]) from None
        body = RegisteredConditionSerializer(
            {
                "condition_id": condition.condition_id,
                "status": "registered" if created else "existing",
                "canonical": condition.indicator_config,
            }
        ).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SubscribeView(APIView):
    throttle_scope = "subscribe"

    @extend_schema(
        operation_id="conditions_subscribe",
        request=SubscribeSerializer,
        responses={201: SubscribedSerializer, 200: SubscribedSerializer, 404: None},
        description="Subscribe one of your bots to a registered condition. Subscribing "
        "again answers the active subscription (200, status `existing`). Another user's "
        "bot, or an unregistered condition_id, answers 404.",
    )
    def post(self, request: Request) -> Response:
        serializer = SubscribeSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data
        subscription, created = services.subscribe(
            user=request.user,
            bot=given["bot"],
            condition=given["condition"],
            bot_type=given["bot_type"],
            bot_config=given["bot_config"],
        )
        body = SubscribedSerializer(subscription, context={"created": created}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SubscriptionDetailView(APIView):
    throttle_scope = "subscribe"

    @extend_schema(
        operation_id="conditions_unsubscribe",
        parameters=[OpenApiParameter("subscription_id", int, OpenApiParameter.PATH)],
        responses={204: None},
        description="End one of your active subscriptions.",
    )
    def delete(self, request: Request, subscription_id: int) -> Response:
        if not services.end_subscription(user=request.user, subscription_id=subscription_id):
            raise NotFound("No active subscription with this id among yours.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConditionStatusView(APIView):
    @extend_schema(
        operation_id="conditions_status",
        parameters=[
            OpenApiParameter(
                "condition_id",
                str,
                OpenApiParameter.PATH,
                pattern="^[0-9a-f]{64}$",
                description="SHA-256 of the canonical form",
            )
        ],
        responses={200: ConditionStatusSerializer},
        description="A registered condition: its canonical form, how many subscribe to it, "
        "when it was last evaluated and last fired, and the values of its latest evaluation. "
        "The registry is shared, so any registered condition_id can be read.",
    )
    def get(self, request: Request, condition_id: str) -> Response:
        found = (
            services.condition_status(condition_id) if valid_condition_id(condition_id) else None
        )
        if found is None:
            raise NotFound("No registered condition with this id.")
        return Response(ConditionStatusSerializer(found).data)


class UserSubscriptionsView(generics.ListAPIView):
    serializer_class = SubscriptionSerializer

    @extend_schema(
        operation_id="conditions_user_subscriptions",
        parameters=[SubscriptionFilterSerializer],
        description="Your active subscriptions, newest first.",
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = SubscriptionFilterSerializer(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        subscriptions = ConditionSubscription.objects.filter(
            user=self.request.user, active=True
        ).select_related("condition")
        if "bot" in filters.validated_data:
            subscriptions = subscriptions.filter(bot_id=filters.validated_data["bot"])
        return subscriptions.order_by("-created_at", "-pk")
