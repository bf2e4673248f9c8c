from __future__ import annotations

from django import forms
from django.contrib import admin

from conditions.admin import ReadOnlyAdmin

from .models import Bot, Deal, DealEvent, ExchangeAccount, Order, PaperOrder


class ExchangeAccountForm(forms.ModelForm):
    """API keys are write-only: the form never renders what is stored."""

    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="leave empty to keep the stored key",
    )
    api_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="leave empty to keep the stored secret",
    )

    class Meta:
        model = ExchangeAccount
        fields = ("user", "name", "exchange", "testnet", "api_key", "api_secret", "paper_balances")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["api_key"] = ""
        self.initial["api_secret"] = ""

    def clean(self):
        cleaned = super().clean()
        for field in ("api_key", "api_secret"):
            if not cleaned.get(field) and self.instance.pk:
                cleaned[field] = getattr(self.instance, field)
        return cleaned


@admin.register(ExchangeAccount)
class ExchangeAccountAdmin(admin.ModelAdmin):
    form = ExchangeAccountForm
    list_display = ("id", "name", "user", "exchange", "testnet", "has_api_key", "created_at")
    list_filter = ("exchange", "testnet")
    search_fields = ("name", "user__username")
    raw_id_fields = ("user",)

    @admin.display(boolean=True, description="API key set")
    def has_api_key(self, obj: ExchangeAccount) -> bool:
        return bool(obj.api_key)


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "user",
        "kind",
        "symbol",
        "base_timeframe",
        "status",
        "account",
        "created_at",
    )
    list_filter = ("status", "kind", "base_timeframe", "symbol")
    search_fields = ("name", "symbol", "user__username")
    raw_id_fields = ("user", "account")
    date_hierarchy = "created_at"
    actions = ("pause", "resume")

    @admin.action(description="Pause the selected bots")
    def pause(self, request, queryset):
        updated = queryset.filter(status=Bot.Status.RUNNING).update(status=Bot.Status.PAUSED)
        self.message_user(request, f"{updated} bot(s) paused.")

    @admin.action(description="Resume the selected bots")
    def resume(self, request, queryset):
        updated = queryset.filter(status=Bot.Status.PAUSED).update(status=Bot.Status.RUNNING)
        self.message_user(request, f"{updated} bot(s) resumed.")


class DealEventInline(admin.TabularInline):
    model = DealEvent
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "from_state", "to_state", "cause", "detail")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Deal)
class DealAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "bot",
        "state",
        "close_reason",
        "average_entry_price",
        "quote_spent",
        "realized_pnl_quote",
        "realized_pnl_pct",
        "opened_at",
        "closed_at",
    )
    list_filter = ("state", "close_reason", "bot__symbol", "bot__user")
    search_fields = ("bot__name", "bot__symbol", "entry_key")
    date_hierarchy = "created_at"
    inlines = (DealEventInline,)
    readonly_fields = [f.name for f in Deal._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "client_order_id",
        "deal",
        "leg",
        "side",
        "type",
        "price",
        "quantity",
        "status",
        "filled_quantity",
        "average_fill_price",
        "fee",
        "updated_at",
    )
    list_filter = ("status", "side", "type", "deal__bot__symbol")
    search_fields = ("client_order_id", "exchange_order_id", "deal__bot__name")
    date_hierarchy = "created_at"


@admin.register(DealEvent)
class DealEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "deal", "from_state", "to_state", "cause", "created_at")
    list_filter = ("to_state", "cause")
    search_fields = ("deal__bot__name", "cause")
    date_hierarchy = "created_at"


@admin.register(PaperOrder)
class PaperOrderAdmin(ReadOnlyAdmin):
    list_display = (
        "client_order_id",
        "account",
        "symbol",
        "side",
        "type",
        "price",
        "status",
        "filled_quantity",
        "fee",
        "created_at",
    )
    list_filter = ("status", "side", "type", "symbol")
    search_fields = ("client_order_id", "account__name")
    date_hierarchy = "created_at"
