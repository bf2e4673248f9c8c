"""Condition registry API: what clients send and what they get back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from bots.models import Bot, BotKind
from conditions.models import Condition, ConditionSubscription
from tradeeon.api_errors import ReferenceNotFound
from tradeeon.throttling import StorableJSONField, check_storable_json

NON_FIELD_ERRORS = api_settings.NON_FIELD_ERRORS_KEY
CONDITION_ID_RE = re.compile(r"[0-9a-f]{64}")
# Keys of the wrapped form {"condition": {...}, "symbol": ..., "timeframe": ...}.
WRAPPER_KEYS = frozenset(("condition", "symbol", "timeframe"))


def valid_condition_id(value: str) -> bool:
    return bool(CONDITION_ID_RE.fullmatch(value))


class RegisterConditionSerializer(serializers.Serializer):
    """A condition in any input shape of CONDITIONS.md section 1, or wrapped as
    {"condition": {...}, "symbol": "BTCUSDT", "timeframe": "1h"} when the
    condition (an alert-shape one, say) leaves them to its enclosing object.

    Only the envelope is checked here; the engine's normalization, run by
    register_condition, judges the condition itself and names the field.
    """

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {NON_FIELD_ERRORS: ["the body must be a JSON object (a condition)"]}
            )
        try:
            check_storable_json(dict(data))
        except serializers.ValidationError as exc:
            # A serializer's own errors must be keyed by field.
            raise serializers.ValidationError(serializers.as_serializer_error(exc)) from None
        condition = data.get("condition")
        if isinstance(condition, Mapping):
            unknown = sorted(set(data) - WRAPPER_KEYS)
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: ["unknown key beside a wrapped condition"]}
                )
            return {
                "raw": dict(condition),
                "symbol": data.get("symbol"),
                "timeframe": data.get("timeframe"),
                "field_prefix": "condition",
            }
        return {"raw": dict(data), "symbol": None, "timeframe": None, "field_prefix": ""}


class RegisteredConditionSerializer(serializers.Serializer):
    condition_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["registered", "existing"])
    canonical = serializers.JSONField(help_text="the canonical form (CONDITIONS.md section 2)")


class SubscribeSerializer(serializers.Serializer):
    bot_id = serializers.IntegerField(min_value=1)
    condition_id = serializers.CharField(
        max_length=64, help_text="a registered condition_id (64 lowercase hex characters)"
    )
    bot_type = serializers.ChoiceField(
        choices=BotKind.choices, required=False, help_text="defaults to the bot's kind"
    )
    bot_config = StorableJSONField(required=False, default=dict)

    def validate_condition_id(self, value: str) -> str:
        value = value.strip().lower()
        if not valid_condition_id(value):
            raise serializers.ValidationError("must be 64 hexadecimal characters (a SHA-256)")
        return value

    def validate(self, attrs: dict) -> dict:
        user = self.context["request"].user
        bot = Bot.objects.filter(pk=attrs["bot_id"], user=user).first()
        if bot is None:
            raise ReferenceNotFound("bot_id", "No bot with this id among yours.")
        condition = Condition.objects.filter(pk=attrs["condition_id"]).first()
        if condition is None:
            raise ReferenceNotFound(
                "condition_id", "No registered condition with this id: register it first."
            )
        bot_type = attrs.get("bot_type", bot.kind)
        if bot_type != bot.kind:
            raise serializers.ValidationError(
                {"bot_type": [f"bot {bot.pk} is a {bot.kind} bot, not {bot_type}"]}
            )
        return {**attrs, "bot": bot, "condition": condition, "bot_type": bot_type}


class SubscriptionSerializer(serializers.ModelSerializer):
    subscription_id = serializers.IntegerField(source="pk", read_only=True)
    bot_id = serializers.IntegerField(read_only=True)
    condition_id = serializers.CharField(read_only=True)
    symbol = serializers.CharField(source="condition.symbol", read_only=True)
    timeframe = serializers.CharField(source="condition.timeframe", read_only=True)
    canonical = serializers.JSONField(source="condition.indicator_config", read_only=True)

    class Meta:
        model = ConditionSubscription
        fields = [
            "subscription_id",
            "bot_id",
            "condition_id",
            "bot_type",
            "bot_config",
            "active",
            "symbol",
            "timeframe",
            "canonical",
            "created_at",
            "last_triggered_at",
        ]
        read_only_fields = fields


class SubscribedSerializer(SubscriptionSerializer):
    status = serializers.SerializerMethodField()

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "status"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["subscribed", "existing"]))
    def get_status(self, subscription: ConditionSubscription) -> str:
        return "subscribed" if self.context.get("created") else "existing"


class SubscriptionFilterSerializer(serializers.Serializer):
    bot = serializers.IntegerField(required=False, min_value=1, help_text="only this bot's")


class LatestEvaluationSerializer(serializers.Serializer):
    timeframe = serializers.CharField(help_text="the timeframe of the pair that evaluated it")
    candle_time = serializers.DateTimeField()
    evaluated_at = serializers.DateTimeField()
    values = serializers.JSONField(
        source="indicator_values", help_text="left and right operand values, and fired"
    )


class ConditionStatusSerializer(serializers.Serializer):
    condition_id = serializers.CharField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    condition_type = serializers.CharField()
    canonical = serializers.JSONField()
    subscribers = serializers.IntegerField(help_text="active bot subscriptions plus active alerts")
    created_at = serializers.DateTimeField()
    last_evaluated_at = serializers.DateTimeField(
        allow_null=True, help_text="when its latest evaluated bar was evaluated"
    )
    last_triggered_at = serializers.DateTimeField(allow_null=True)
    evaluation_count = serializers.IntegerField(
        help_text="the closed bars it was evaluated at, once per pair that evaluated it"
    )
    trigger_count = serializers.IntegerField()
    latest_evaluation = LatestEvaluationSerializer(allow_null=True)
