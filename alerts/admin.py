from __future__ import annotations

from django.contrib import admin
from django.db import models

from conditions.admin import ReadOnlyAdmin

from .models import Alert, AlertTrigger, Notification, OutboxMessage, WebhookDelivery, WebhookSecret


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "user",
        "symbol",
        "base_timeframe",
        "fire_mode",
        "status",
        "expires_at",
        "last_fired_bar",
        "created_at",
    )
    list_filter = ("status", "fire_mode", "base_timeframe", "symbol")
    search_fields = ("name", "symbol", "user__username")
    raw_id_fields = ("user",)
    filter_horizontal = ("conditions",)
    readonly_fields = ("last_fired_bar", "created_at", "updated_at")
    date_hierarchy = "created_at"
    actions = ("pause", "resume")

    @admin.action(description="Pause the selected alerts")
    def pause(self, request, queryset):
        updated = queryset.filter(status=Alert.Status.ACTIVE).update(status=Alert.Status.PAUSED)
        self.message_user(request, f"{updated} alert(s) paused.")

    @admin.action(description="Resume the selected alerts")
    def resume(self, request, queryset):
        updated = queryset.filter(status=Alert.Status.PAUSED).update(status=Alert.Status.ACTIVE)
        self.message_user(request, f"{updated} alert(s) resumed.")


@admin.register(AlertTrigger)
class AlertTriggerAdmin(ReadOnlyAdmin):
    list_display = ("id", "alert", "alert_symbol", "bar_open_time", "fired_at")
    list_filter = ("alert__symbol", "alert__base_timeframe", "alert__user")
    search_fields = ("alert__name", "alert__symbol", "alert__user__username")
    date_hierarchy = "fired_at"

    @admin.display(description="symbol", ordering="alert__symbol")
    def alert_symbol(self, obj: AlertTrigger) -> str:
        return obj.alert.symbol


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "title", "created_at", "read_at")
    list_filter = (("read_at", admin.EmptyFieldListFilter), "user")
    search_fields = ("title", "body", "user__username")
    raw_id_fields = ("user", "trigger")
    date_hierarchy = "created_at"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    # The URL called, shown as recorded; Django 6 changes the form field's
    # default scheme, said here so the page keeps its meaning.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = (
        "id",
        "trigger",
        "url",
        "attempt",
        "status_code",
        "outcome",
        "next_retry_at",
        "created_at",
    )
    list_filter = ("outcome", "status_code")
    search_fields = ("url", "response_excerpt", "error")
    date_hierarchy = "created_at"


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "topic",
        "key",
        "attempts",
        "created_at",
        "sent_at",
        "done_at",
        "last_error",
    )
    list_filter = ("topic", ("done_at", admin.EmptyFieldListFilter))
    search_fields = ("key", "last_error")
    date_hierarchy = "created_at"


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    # The secret signs webhooks; operators can see who has one, never its value.
    list_display = ("user", "rotated_at")
    search_fields = ("user__username",)
    fields = ("user", "rotated_at")
    readonly_fields = ("user", "rotated_at")

    def has_add_permission(self, request):
        return False
