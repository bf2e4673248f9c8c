from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from .models import (
    BarEvaluation,
    Condition,
    ConditionSubscription,
    ConditionTrigger,
    EvaluationCursor,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Logs: operators read them, nobody edits them by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Condition)
class ConditionAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "symbol",
        "timeframe",
        "condition_type",
        "operator",
        "active_subscribers",
        "trigger_count",
        "last_triggered_at",
    )
    list_filter = ("timeframe", "condition_type", "symbol")
    search_fields = ("condition_id", "symbol")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Condition._meta.fields] + [
        "last_evaluated",
        "evaluation_count",
        "latest_evaluations",
    ]

    def has_add_permission(self, request):
        # Conditions enter the registry through normalization only.
        return False

    @admin.display(description="id")
    def short_id(self, obj: Condition) -> str:
        return obj.condition_id[:12]

    @admin.display(description="operator")
    def operator(self, obj: Condition) -> str:
        return obj.indicator_config.get("op", "")

    @admin.display(description="last evaluated at")
    def last_evaluated(self, obj: Condition):
        # On the page of one condition only, as the count below: its rows are
        # found among its symbol's, newest first.
        rows = BarEvaluation.objects.holding(obj.condition_id, obj.symbol)
        return rows.values_list("evaluated_at", flat=True).first()

    @admin.display(description="pairs' bars evaluated")
    def evaluation_count(self, obj: Condition) -> int:
        # On the page of one condition only: a list would look into every
        # cache row of the symbol of each condition it shows.
        return BarEvaluation.objects.holding(obj.condition_id, obj.symbol).count()

    @admin.display(description="subscribers")
    def active_subscribers(self, obj: Condition) -> int:
        return obj.subscriptions.filter(active=True).count()

    @admin.display(description="latest evaluations")
    def latest_evaluations(self, obj: Condition) -> str:
        rows = BarEvaluation.objects.holding(obj.condition_id, obj.symbol).values_list(
            "timeframe", "candle_time", "evaluated_at", "condition_values"
        )[:20]
        if not rows:
            return "never evaluated"
        body = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>", rows
        )
        return format_html(
            "<table><tr><th>pair</th><th>candle</th><th>evaluated at</th><th>values</th></tr>"
            "{}</table>"
            '<p><a href="{}?condition={}">all evaluations</a></p>',
            body,
            reverse("admin:conditions_evaluation_cache"),
            obj.condition_id,
        )

    def get_urls(self):
        return [
            path("status/", self.admin_site.admin_view(self.status_view), name="conditions_status"),
            path(
                "evaluation-cache/",
                self.admin_site.admin_view(self.evaluation_cache_view),
                name="conditions_evaluation_cache",
            ),
            *super().get_urls(),
        ]

    def status_view(self, request):
        """What the pipeline is doing: sharing, throughput, time per pair."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        from .metrics import snapshot

        context = {
            **self.admin_site.each_context(request),
            "title": "Evaluation status",
            "status": snapshot(),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/conditions/status.html", context)

    def evaluation_cache_view(self, request):
        """condition_evaluation_cache has a composite primary key, which the
        admin's changelist cannot show, so it gets this read-only list: a row
        per pair and bar, or with a condition given, its values at each."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = BarEvaluation.objects.order_by("-candle_time", "symbol", "timeframe")
        filters = {}
        for field in ("condition", "symbol", "timeframe"):
            value = request.GET.get(field, "").strip()
            if value:
                filters[field] = value
        if "condition" in filters:
            cid = filters["condition"]
            symbol = Condition.objects.filter(pk=cid).values_list("symbol", flat=True).first()
            rows = BarEvaluation.objects.holding(cid, symbol)
        if "symbol" in filters:
            rows = rows.filter(symbol=filters["symbol"].upper())
        if "timeframe" in filters:
            rows = rows.filter(timeframe=filters["timeframe"])
        page = Paginator(rows, 100).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Condition evaluation cache",
            "page": page,
            "filters": filters,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/conditions/evaluation_cache.html", context)


@admin.register(ConditionSubscription)
class ConditionSubscriptionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "bot",
        "short_condition",
        "bot_type",
        "active",
        "created_at",
        "last_triggered_at",
    )
    list_filter = ("active", "bot_type", "condition__symbol", "condition__timeframe")
    search_fields = ("user__username", "bot__name", "condition__condition_id")
    raw_id_fields = ("user", "bot", "condition")
    date_hierarchy = "created_at"
    actions = ("deactivate",)

    @admin.display(description="condition")
    def short_condition(self, obj: ConditionSubscription) -> str:
        return str(obj.condition)

    @admin.action(description="Deactivate the selected subscriptions")
    def deactivate(self, request, queryset):
        updated = queryset.update(active=False)
        self.message_user(request, f"{updated} subscription(s) deactivated.")


@admin.register(ConditionTrigger)
class ConditionTriggerAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "condition",
        "symbol",
        "timeframe",
        "candle_time",
        "subscribers_count",
        "processed",
        "triggered_at",
    )
    list_filter = ("processed", "timeframe", "symbol")
    search_fields = ("condition__condition_id", "symbol")
    date_hierarchy = "candle_time"


@admin.register(EvaluationCursor)
class EvaluationCursorAdmin(ReadOnlyAdmin):
    list_display = ("symbol", "timeframe", "last_bar", "updated_at")
    list_filter = ("timeframe", "symbol")
    search_fields = ("symbol",)
