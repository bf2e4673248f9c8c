"""Alerts API: the alert shape of CONDITIONS.md section 6, triggers,
previews, notifications and the webhook secret."""

from __future__ import annotations

import re
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts.models import Alert, AlertStatus, AlertTrigger, FireMode, Notification
from alerts.webhooks import WebhookURLRefused, check_webhook_url
from conditions.engine.errors import ConditionError
from conditions.engine.timeframes import normalize_timeframe
from tradeeon.throttling import StorableJSONField

SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}")
# What the schema promises for a symbol; clean_symbol upper-cases it.
SYMBOL_PATTERN = r"^[A-Za-z0-9]{2,20}$"
# Statuses a client may set; triggered and expired are the evaluator's to set.
SETTABLE_STATUSES = (AlertStatus.ACTIVE, AlertStatus.PAUSED)
PREVIEW_MAX_BARS = 1000


def symbol_field(**kwargs: Any) -> serializers.RegexField:
    return serializers.RegexField(
        SYMBOL_PATTERN,
        trim_whitespace=False,
        error_messages={"invalid": "must be 2 to 20 letters or digits"},
        **kwargs,
    )


def clean_symbol(value: str) -> str:
    symbol = value.strip().upper()
    if not SYMBOL_RE.fullmatch(symbol):
        raise serializers.ValidationError(f"must be 2 to 20 letters or digits, got {value!r}")
    return symbol


def clean_timeframe(value: str) -> str:
    try:
        return normalize_timeframe(value, field="base_timeframe")
    except ConditionError as exc:
        raise serializers.ValidationError(exc.reason) from None


def clean_action(action: dict) -> dict:
    """{"type": "notify"} or {"type": "webhook", "url": ...}: a webhook URL is
    checked now (http or https, a host that is not loopback, private or
    link-local) rather than at the first trigger."""
    kind = action.get("type", "notify")
    allowed = {"notify": {"type"}, "webhook": {"type", "url"}}
    if kind not in allowed:
        raise serializers.ValidationError({"type": ["must be notify or webhook"]})
    unknown = sorted(set(action) - allowed[kind])
    if unknown:
        raise serializers.ValidationError({unknown[0]: [f"not a key of a {kind} action"]})
    if kind == "notify":
        return {"type": "notify"}
    url = action.get("url")
    if not isinstance(url, str) or not url.strip():
        raise serializers.ValidationError({"url": ["a webhook action needs a url"]})
    if len(url) > 500:
        raise serializers.ValidationError({"url": ["at most 500 characters"]})
    try:
        check_webhook_url(url.strip())
    except WebhookURLRefused as exc:
        raise serializers.ValidationError({"url": [str(exc)]}) from None
    return {"type": "webhook", "url": url.strip()}


class AlertSerializer(serializers.ModelSerializer):
    """An alert as clients send it; saving normalizes it and registers its
    conditions, so an alert that cannot be evaluated is never stored."""

    conditionConfig = StorableJSONField(
        source="condition_config",
        help_text="simple or playbook mode, CONDITIONS.md section 6",
    )
    fireMode = serializers.ChoiceField(
        source="fire_mode", choices=FireMode.choices, default=FireMode.PER_BAR_CLOSE
    )
    action = StorableJSONField(
        default=lambda: {"type": "notify"},
        help_text='{"type": "notify"} or {"type": "webhook", "url": "https://..."}',
    )
    status = serializers.ChoiceField(
        choices=AlertStatus.choices,
        default=AlertStatus.ACTIVE,
        help_text="a client sets active or paused; triggered and expired are set by evaluation",
    )
    condition_ids = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = [
            "id",
            "name",
            "symbol",
            "base_timeframe",
            "conditionConfig",
            "action",
            "fireMode",
            "status",
            "expires_at",
            "last_fired_bar",
            "condition_ids",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_fired_bar", "condition_ids", "created_at", "updated_at"]
        extra_kwargs = {
            "symbol": {"help_text": "e.g. BTCUSDT"},
            "base_timeframe": {"help_text": "1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M"},
        }

    def get_fields(self) -> dict:
        fields = super().get_fields()
        # Model choices would refuse the timeframe aliases (60m, 1H) the
        # engine resolves.
        fields["base_timeframe"] = serializers.CharField(
            max_length=8, help_text=fields["base_timeframe"].help_text
        )
        fields["symbol"] = symbol_field(help_text="e.g. BTCUSDT")
        return fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_condition_ids(self, alert: Alert) -> list[str]:
        known = self.context.get("condition_ids", {}).get(alert.pk)
        if known is None:
            known = alert.conditions.values_list("pk", flat=True)
        return sorted(known)

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)

    def validate_base_timeframe(self, value: str) -> str:
        return clean_timeframe(value)

    def validate_action(self, value: dict) -> dict:
        return clean_action(value)

    def validate_status(self, value: str) -> str:
        current = self.instance.status if self.instance is not None else None
        if value not in SETTABLE_STATUSES and value != current:
            raise serializers.ValidationError(
                "a client sets active or paused; triggered and expired are set by evaluation"
            )
        return value

    def validate_expires_at(self, value: Any) -> Any:
        unchanged = self.instance is not None and self.instance.expires_at == value
        if value is not None and not unchanged and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value


class AlertFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=AlertStatus.choices, required=False)
    symbol = symbol_field(required=False)

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)


class AlertTriggerSerializer(serializers.ModelSerializer):
    alert_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = AlertTrigger
        fields = ["id", "alert_id", "bar_open_time", "fired_at", "snapshot"]
        read_only_fields = fields


class AlertPreviewSerializer(serializers.Serializer):
    """An alert body (name, action and status are ignored) and how many of the
    latest closed bars to report."""

    symbol = symbol_field()
    base_timeframe = serializers.CharField(max_length=8)
    conditionConfig = StorableJSONField()
    fireMode = serializers.ChoiceField(choices=FireMode.choices, default=FireMode.PER_BAR_CLOSE)
    bars = serializers.IntegerField(
        min_value=1,
        max_value=PREVIEW_MAX_BARS,
        default=500,
        help_text="report the triggers within this many latest closed bars",
    )

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)

    def validate_base_timeframe(self, value: str) -> str:
        return clean_timeframe(value)


class PreviewTriggerSerializer(serializers.Serializer):
    bar_open_time = serializers.DateTimeField()
    close = serializers.FloatField()
    values = serializers.JSONField(
        help_text="per condition_id, the left and right operand values at that bar"
    )


class PreviewConditionSerializer(serializers.Serializer):
    condition_id = serializers.CharField()
    canonical = serializers.JSONField()


class AlertPreviewResultSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    base_timeframe = serializers.CharField()
    bars = serializers.IntegerField(help_text="closed bars covered")
    # "from" is a Python keyword: the field is declared in __init__.
    to = serializers.DateTimeField(allow_null=True, help_text="open time of the last bar covered")
    triggers = PreviewTriggerSerializer(many=True)
    conditions = PreviewConditionSerializer(many=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from"] = serializers.DateTimeField(
            allow_null=True, help_text="open time of the first bar covered"
        )


class NotificationSerializer(serializers.ModelSerializer):
    trigger_id = serializers.IntegerField(read_only=True, allow_null=True)
    alert_id = serializers.IntegerField(source="trigger.alert_id", read_only=True, allow_null=True)

    class Meta:
        model = Notification
        fields = ["id", "title", "body", "created_at", "read_at", "trigger_id", "alert_id"]
        read_only_fields = fields


class NotificationFilterSerializer(serializers.Serializer):
    unread = serializers.BooleanField(required=False, allow_null=True, default=None)


class MarkedReadSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="notifications marked read")


class WebhookSecretStateSerializer(serializers.Serializer):
    exists = serializers.BooleanField()
    rotated_at = serializers.DateTimeField(allow_null=True)


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="shown this once: store it now")
    rotated_at = serializers.DateTimeField()
