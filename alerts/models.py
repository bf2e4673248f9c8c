"""Alerts, what they fired, and how users were told."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q

from conditions.models import SYMBOL_CHARACTERS, TIMEFRAME_CHOICES, Condition, text_format
from tradeeon.encryption import EncryptedTextField


class FireMode(models.TextChoices):
    PER_BAR_CLOSE = "per_bar_close"
    PER_BAR = "per_bar"
    ONCE = "once"


class AlertStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    TRIGGERED = "triggered"
    EXPIRED = "expired"


class Alert(models.Model):
    FireMode = FireMode

    Status = AlertStatus

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alerts"
    )
    name = models.CharField(max_length=120, blank=True)
    symbol = models.CharField(max_length=20)
    base_timeframe = models.CharField(max_length=3, choices=TIMEFRAME_CHOICES)
    condition_config = models.JSONField(help_text="conditionConfig, CONDITIONS.md section 6")
    action = models.JSONField(
        default=dict, help_text='{"type": "notify"} or {"type": "webhook", "url": ...}'
    )
    fire_mode = models.CharField(
        max_length=16, choices=FireMode.choices, default=FireMode.PER_BAR_CLOSE
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_fired_bar = models.DateTimeField(null=True, blank=True)
    # The registry conditions this alert's playbook reads, kept in step on save,
    # so subscriber counts and sharing are visible in the registry.
    conditions = models.ManyToManyField(Condition, related_name="alerts", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["symbol", "base_timeframe", "status"], name="alert_symbol_tf_status"
            )
        ]
        constraints = [
            text_format("symbol", SYMBOL_CHARACTERS, (2, 20), "alert_symbol_format"),
            models.CheckConstraint(
                condition=Q(status__in=AlertStatus.values), name="alert_status_known"
            ),
            models.CheckConstraint(
                condition=Q(fire_mode__in=FireMode.values), name="alert_fire_mode_known"
            ),
            models.CheckConstraint(
                condition=Q(base_timeframe__in=[tf for tf, _ in TIMEFRAME_CHOICES]),
                name="alert_timeframe_known",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.symbol} {self.base_timeframe} alert #{self.pk}"


class AlertTrigger(models.Model):
    """An alert firing at one bar. The unique constraint is the debounce."""

    # Its index is the unique constraint's, which starts with it.
    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="triggers", db_index=False
    )
    bar_open_time = models.DateTimeField()
    fired_at = models.DateTimeField(auto_now_add=True)
    snapshot = models.JSONField(default=dict, help_text="condition values at the bar")

    class Meta:
        ordering = ["-bar_open_time"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "bar_open_time"], name="one_trigger_per_alert_bar"
            ),
        ]

    def __str__(self) -> str:
        return f"alert {self.alert_id} @ {self.bar_open_time:%Y-%m-%d %H:%M}"


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    trigger = models.OneToOneField(
        AlertTrigger, on_delete=models.CASCADE, null=True, blank=True, related_name="notification"
    )
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self) -> str:
        return self.title


class DeliveryOutcome(models.TextChoices):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    REFUSED = "refused"


class WebhookDelivery(models.Model):
    """One attempt to POST a trigger to a user's webhook."""

    Outcome = DeliveryOutcome

    trigger = models.ForeignKey(
        AlertTrigger, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    url = models.URLField(max_length=500)
    attempt = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "attempt"], name="one_delivery_row_per_attempt"
            ),
            models.CheckConstraint(condition=Q(attempt__gte=1), name="delivery_attempt_positive"),
            models.CheckConstraint(
                condition=Q(outcome__in=DeliveryOutcome.values), name="delivery_outcome_known"
            ),
        ]

    def __str__(self) -> str:
        return f"trigger {self.trigger_id} attempt {self.attempt}: {self.outcome}"


class OutboxMessage(models.Model):
    """Work that must follow a commit. Written in the same transaction as its
    cause; sent after commit; swept and re-sent if a worker died in between."""

    topic = models.CharField(max_length=64, help_text="what to run, e.g. dispatch_alert_trigger")
    # Unique by a constraint, not unique=True, which on PostgreSQL adds a
    # LIKE index that no query uses to every row's insert.
    key = models.CharField(max_length=128, help_text="idempotency key")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["done_at", "created_at"], name="outbox_pending")]
        constraints = [models.UniqueConstraint(fields=["key"], name="outbox_key_unique")]

    def __str__(self) -> str:
        return f"{self.topic} {self.key}"


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


class WebhookSecret(models.Model):
    """The per-user key that signs webhook bodies (HMAC-SHA256)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    secret = EncryptedTextField(default=new_webhook_secret)
    rotated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.user}"
