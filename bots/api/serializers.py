"""Bots API: bots with the DCA settings of BOTS.md as flat fields, deals,
orders and exchange accounts.

The fields here parse types and document the schema; what the settings mean
(ranges, a ladder that stays above zero, a trailing deviation inside the take
profit) is judged by bots.dca.validate_settings, the same function the
workers and the bot backtest read settings with, so the API never stores
settings the DCA logic would refuse.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts.api.serializers import clean_symbol, clean_timeframe, symbol_field
from bots import dca
from bots.models import (
    Bot,
    BotKind,
    CloseReason,
    Deal,
    DealEvent,
    DealState,
    ExchangeAccount,
    ExchangeName,
    Order,
    OrderSide,
    OrderStatus,
)
from tradeeon.api_errors import ReferenceNotFound
from tradeeon.throttling import StorableJSONField

BOT_FIELDS = ("name", "kind", "account", "symbol", "base_timeframe")


def amount(help_text: str, **kwargs: Any) -> serializers.DecimalField:
    """A decimal given as a JSON number or a string, shown as a plain string."""
    return serializers.DecimalField(
        max_digits=30,
        decimal_places=18,
        normalize_output=True,
        help_text=help_text,
        **kwargs,
    )


def optional(**kwargs: Any) -> dict:
    return {"required": False, "allow_null": True, **kwargs}


class BotSerializer(serializers.Serializer):
    """A bot: name, kind, account, market, and the DCA settings table flat.
    Settings left out take bots.dca's defaults."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=120)
    kind = serializers.ChoiceField(choices=BotKind.choices, default=BotKind.DCA)
    account = serializers.IntegerField(
        **optional(min_value=1),
        help_text="one of your exchange accounts; default: your paper account",
    )
    status = serializers.CharField(read_only=True)
    symbol = symbol_field()
    base_timeframe = serializers.CharField(max_length=8)
    entry = StorableJSONField(
        **optional(),
        help_text='a conditionConfig (CONDITIONS.md section 6), or {"mode": "asap"} (default)',
    )
    # Required; null only in the answer for a bot whose stored settings lack it.
    base_order_size = amount("quote amount of the base order (market)", allow_null=True)
    safety_order_size = amount(
        "quote amount of the first safety order; required when max_safety_orders > 0",
        **optional(),
    )
    max_safety_orders = serializers.IntegerField(
        **optional(min_value=0, max_value=dca.MAX_SAFETY_ORDERS),
        help_text="safety orders a deal may fill (default 0)",
    )
    active_safety_orders = serializers.IntegerField(
        **optional(min_value=1, max_value=dca.MAX_SAFETY_ORDERS),
        help_text="working at once in resting mode (default 1)",
    )
    price_deviation = amount("% below the base fill of the first safety order", **optional())
    step_scale = amount("multiplier of each next deviation step", **optional())
    volume_scale = amount("multiplier of each next safety order size", **optional())
    take_profit = amount("% above the average entry (or the base fill)", allow_null=True)
    take_profit_type = serializers.ChoiceField(
        choices=dca.TAKE_PROFIT_TYPES, **optional(), help_text="default average"
    )
    trailing_deviation = amount(
        "optional: after take profit is reached, exit this % below the high since",
        **optional(),
    )
    stop_loss = amount("optional: % below the average entry; exits at market", **optional())
    cooldown = serializers.IntegerField(
        **optional(min_value=0, max_value=dca.MAX_COOLDOWN_SECONDS),
        help_text="seconds after a deal closes before the next may start",
    )
    max_active_deals = serializers.IntegerField(
        **optional(min_value=1, max_value=dca.MAX_ACTIVE_DEALS)
    )
    safety_mode = serializers.ChoiceField(
        choices=dca.SAFETY_MODES, **optional(), help_text="default triggered"
    )
    fee_rate = amount("paper exchange fee as a fraction (0.001 = 0.1%)", **optional())
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate_kind(self, value: str) -> str:
        if value != BotKind.DCA:
            raise serializers.ValidationError(f"{value} bots are not supported yet: only dca")
        return value

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)

    def validate_base_timeframe(self, value: str) -> str:
        return clean_timeframe(value)

    def validate_account(self, value: int | None) -> ExchangeAccount | None:
        if value is None:
            return None
        account = ExchangeAccount.objects.filter(
            pk=value, user=self.context["request"].user
        ).first()
        if account is None:
            raise ReferenceNotFound("account", "No exchange account with this id among yours.")
        return account

    def validate(self, attrs: dict) -> dict:
        """The whole bot after this request (a PATCH merges into what is
        stored), its settings judged by bots.dca."""
        bot: Bot | None = self.instance
        given_settings = {name: attrs[name] for name in dca.SETTING_FIELDS if name in attrs}
        settings = {**(bot.settings if bot is not None else {}), **given_settings}
        values = {name: attrs.get(name, getattr(bot, name, None)) for name in BOT_FIELDS}
        try:
            checked = dca.validate_settings(
                settings, symbol=values["symbol"], base_timeframe=values["base_timeframe"]
            )
        except dca.BotSettingsError as exc:
            raise serializers.ValidationError({exc.field: [exc.reason]}) from None
        if bot is not None and bot.deals.exclude(state=DealState.CLOSED).exists():
            for name in ("symbol", "account"):
                if name in attrs and attrs[name] != getattr(bot, name):
                    raise serializers.ValidationError(
                        {name: ["cannot change while the bot has deals that are not closed"]}
                    )
        return {**values, "settings": checked.to_json()}

    def to_representation(self, bot: Bot) -> dict:
        flat = {**dca.DCA_DEFAULTS, **bot.settings}
        flat.update(
            id=bot.pk,
            name=bot.name,
            kind=bot.kind,
            account=bot.account_id,
            status=bot.status,
            symbol=bot.symbol,
            base_timeframe=bot.base_timeframe,
            created_at=bot.created_at,
            updated_at=bot.updated_at,
        )
        shown = {}
        for name, field in self.fields.items():
            value = flat.get(name)
            try:
                shown[name] = None if value is None else field.to_representation(value)
            except (TypeError, ValueError, ArithmeticError):
                # A row edited by hand (the admin) must not make the whole list
                # fail: such a setting shows its default.
                default = dca.DCA_DEFAULTS.get(name)
                shown[name] = None if default is None else field.to_representation(default)
        return shown


class BotFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Bot.Status.choices, required=False)
    symbol = symbol_field(required=False)

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)


class DealEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DealEvent
        fields = ["from_state", "to_state", "cause", "detail", "created_at"]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    deal_id = serializers.IntegerField(read_only=True)
    bot_id = serializers.IntegerField(source="deal.bot_id", read_only=True)
    symbol = serializers.CharField(source="deal.bot.symbol", read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "deal_id",
            "bot_id",
            "symbol",
            "leg",
            "side",
            "type",
            "price",
            "quantity",
            "quote_amount",
            "client_order_id",
            "exchange_order_id",
            "status",
            "filled_quantity",
            "average_fill_price",
            "fee",
            "fee_asset",
            "error",
            "created_at",
            "submitted_at",
            "filled_at",
            "updated_at",
        ]
        read_only_fields = fields


class DealSerializer(serializers.ModelSerializer):
    bot_id = serializers.IntegerField(read_only=True)
    symbol = serializers.CharField(source="bot.symbol", read_only=True)
    close_reason = serializers.SerializerMethodField()

    class Meta:
        model = Deal
        fields = [
            "id",
            "bot_id",
            "symbol",
            "state",
            "close_reason",
            "base_fill_price",
            "average_entry_price",
            "quote_spent",
            "base_bought",
            "quote_received",
            "safety_orders_filled",
            "take_profit_price",
            "stop_loss_price",
            "trailing_high",
            "realized_pnl_quote",
            "realized_pnl_pct",
            "created_at",
            "opened_at",
            "closed_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(
            choices=CloseReason.choices, allow_null=True, help_text="null until the deal closes"
        )
    )
    def get_close_reason(self, deal: Deal) -> str | None:
        # Stored blank while the deal is open; blank is not one of the reasons.
        return deal.close_reason or None


class DealDetailSerializer(DealSerializer):
    orders = OrderSerializer(many=True, read_only=True)
    events = DealEventSerializer(many=True, read_only=True)

    class Meta(DealSerializer.Meta):
        fields = [*DealSerializer.Meta.fields, "orders", "events"]
        read_only_fields = fields


class DealFilterSerializer(serializers.Serializer):
    bot = serializers.IntegerField(required=False, min_value=1)
    state = serializers.ChoiceField(choices=DealState.choices, required=False)
    symbol = symbol_field(required=False)

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)


class OrderFilterSerializer(serializers.Serializer):
    bot = serializers.IntegerField(required=False, min_value=1)
    deal = serializers.IntegerField(required=False, min_value=1)
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
    side = serializers.ChoiceField(choices=OrderSide.choices, required=False)
    symbol = symbol_field(required=False)

    def validate_symbol(self, value: str) -> str:
        return clean_symbol(value)


class ExchangeAccountSerializer(serializers.ModelSerializer):
    """API keys are write-only: stored encrypted, never shown again."""

    api_key = serializers.CharField(
        write_only=True, required=False, allow_blank=False, max_length=256, trim_whitespace=True
    )
    api_secret = serializers.CharField(
        write_only=True, required=False, allow_blank=False, max_length=256, trim_whitespace=True
    )
    has_api_key = serializers.SerializerMethodField()

    class Meta:
        model = ExchangeAccount
        fields = [
            "id",
            "name",
            "exchange",
            "testnet",
            "api_key",
            "api_secret",
            "has_api_key",
            "paper_balances",
            "created_at",
        ]
        read_only_fields = ["id", "has_api_key", "paper_balances", "created_at"]

    def get_has_api_key(self, account: ExchangeAccount) -> bool:
        return bool(account.api_key)

    def validate_name(self, value: str) -> str:
        user = self.context["request"].user
        taken = ExchangeAccount.objects.filter(user=user, name=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError("you already have an account with this name")
        return value

    def validate(self, attrs: dict) -> dict:
        account = self.instance
        exchange = attrs.get("exchange", account.exchange if account else ExchangeName.PAPER)
        if account is not None and exchange != account.exchange:
            raise serializers.ValidationError(
                {"exchange": ["cannot change: create another account instead"]}
            )
        keys = [name for name in ("api_key", "api_secret") if name in attrs]
        if exchange == ExchangeName.PAPER and keys:
            raise serializers.ValidationError({keys[0]: ["a paper account takes no keys"]})
        if exchange != ExchangeName.PAPER:
            if len(keys) == 1:
                missing = "api_secret" if keys == ["api_key"] else "api_key"
                raise serializers.ValidationError(
                    {missing: ["give api_key and api_secret together"]}
                )
            if account is None and not keys:
                raise serializers.ValidationError(
                    {"api_key": [f"a {exchange} account needs api_key and api_secret"]}
                )
        return attrs
