"""Bots, their deals and orders, and the exchange accounts they trade on.

Money is Decimal end to end; order uniqueness is the database's job.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from conditions.models import SYMBOL_CHARACTERS, TIMEFRAME_CHOICES, text_format
from tradeeon.encryption import EncryptedTextField

DEFAULT_PAPER_BALANCES = {"USDT": "10000"}


def default_paper_balances() -> dict:
    return dict(DEFAULT_PAPER_BALANCES)


def money(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=36, decimal_places=18, **kwargs)


class ExchangeName(models.TextChoices):
    PAPER = "paper"
    BINANCE = "binance"


class ExchangeAccount(models.Model):
    Exchange = ExchangeName

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exchange_accounts"
    )
    name = models.CharField(max_length=80)
    exchange = models.CharField(max_length=16, choices=Exchange.choices, default=Exchange.PAPER)
    testnet = models.BooleanField(default=False)
    api_key = EncryptedTextField(blank=True)
    api_secret = EncryptedTextField(blank=True)
    paper_balances = models.JSONField(default=default_paper_balances, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="account_name_unique_per_user"),
            models.CheckConstraint(
                condition=Q(exchange__in=ExchangeName.values), name="account_exchange_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.exchange}{', testnet' if self.testnet else ''})"


class BotKind(models.TextChoices):
    DCA = "dca"
    GRID = "grid"
    TREND = "trend"


class BotStatus(models.TextChoices):
    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"


class Bot(models.Model):
    Kind = BotKind

    Status = BotStatus

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bots"
    )
    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="bots")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.DCA)
    symbol = models.CharField(max_length=20)
    base_timeframe = models.CharField(max_length=3, choices=TIMEFRAME_CHOICES)
    settings = models.JSONField(help_text="validated settings (BOTS.md)")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.STOPPED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["symbol", "status"], name="bot_symbol_status")]
        constraints = [
            text_format("symbol", SYMBOL_CHARACTERS, (2, 20), "bot_symbol_format"),
            models.CheckConstraint(condition=Q(kind__in=BotKind.values), name="bot_kind_known"),
            models.CheckConstraint(
                condition=Q(status__in=BotStatus.values), name="bot_status_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} {self.symbol})"


class DealState(models.TextChoices):
    WAITING_ENTRY = "waiting_entry"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class CloseReason(models.TextChoices):
    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    MANUAL = "manual"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Deal(models.Model):
    State = DealState

    CloseReason = CloseReason

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="deals")
    # What opened the deal (e.g. the entry trigger's candle): two workers
    # handling the same trigger collide here instead of opening two deals.
    entry_key = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING_ENTRY)
    close_reason = models.CharField(max_length=16, choices=CloseReason.choices, blank=True)
    base_fill_price = money(null=True, blank=True)
    average_entry_price = money(null=True, blank=True)
    quote_spent = money(default=Decimal(0))
    base_bought = money(default=Decimal(0))
    quote_received = money(default=Decimal(0))
    safety_orders_filled = models.PositiveSmallIntegerField(default=0)
    take_profit_price = money(null=True, blank=True)
    stop_loss_price = money(null=True, blank=True)
    trailing_high = money(null=True, blank=True)
    realized_pnl_quote = money(null=True, blank=True)
    realized_pnl_pct = money(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["bot", "state"], name="deal_bot_state")]
        constraints = [
            models.UniqueConstraint(fields=["bot", "entry_key"], name="one_deal_per_bot_entry"),
            models.CheckConstraint(
                condition=Q(state__in=DealState.values), name="deal_state_known"
            ),
            models.CheckConstraint(
                condition=(Q(state="closed") & ~Q(close_reason=""))
                | (~Q(state="closed") & Q(close_reason="")),
                name="deal_close_reason_iff_closed",
            ),
            models.CheckConstraint(
                condition=Q(quote_spent__gte=0, base_bought__gte=0, quote_received__gte=0),
                name="deal_amounts_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"deal {self.pk} of {self.bot} ({self.state})"


class OrderSide(models.TextChoices):
    BUY = "buy"
    SELL = "sell"


class OrderType(models.TextChoices):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(models.TextChoices):
    NEW = "new"  # a row, not yet sent
    SUBMITTED = "submitted"  # sent; the exchange's answer not yet known
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


class Order(models.Model):
    Side = OrderSide

    Type = OrderType

    Status = OrderStatus

    deal = models.ForeignKey(Deal, on_delete=models.CASCADE, related_name="orders")
    leg = models.CharField(max_length=24, help_text="base, safety_1.., take_profit, stop_loss, ...")
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=8, choices=Type.choices)
    price = money(null=True, blank=True)
    quantity = money(null=True, blank=True)
    quote_amount = money(null=True, blank=True)
    client_order_id = models.CharField(max_length=36, unique=True)
    exchange_order_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    filled_quantity = money(default=Decimal(0))
    filled_quote = money(default=Decimal(0), help_text="gross quote paid or received")
    average_fill_price = money(null=True, blank=True)
    fee = money(default=Decimal(0))
    fee_asset = models.CharField(max_length=16, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # Set with the deal's decision to cancel it; until the order is final,
    # reconciliation repeats the cancel and nothing sends it.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    filled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "updated_at"], name="order_status_updated")]
        constraints = [
            models.UniqueConstraint(fields=["deal", "leg"], name="one_order_per_deal_leg"),
            models.CheckConstraint(
                condition=Q(client_order_id__regex=r"^[A-Za-z0-9_-]{1,36}$"),
                name="order_client_id_format",
            ),
            models.CheckConstraint(condition=Q(side__in=OrderSide.values), name="order_side_known"),
            models.CheckConstraint(condition=Q(type__in=OrderType.values), name="order_type_known"),
            models.CheckConstraint(
                condition=Q(status__in=OrderStatus.values), name="order_status_known"
            ),
            models.CheckConstraint(
                condition=Q(price__isnull=True) | Q(price__gt=0), name="order_price_positive"
            ),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True) | Q(quantity__gt=0),
                name="order_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(filled_quantity__gte=0, fee__gte=0), name="order_fills_non_negative"
            ),
            models.CheckConstraint(
                condition=~Q(type="limit") | Q(price__isnull=False), name="order_limit_has_price"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.type} ({self.status})"


class DealEvent(models.Model):
    """Every state change of a deal, with its time and cause."""

    deal = models.ForeignKey(Deal, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16)
    cause = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"deal {self.deal_id}: {self.from_state or '-'} -> {self.to_state} ({self.cause})"


class PaperOrder(models.Model):
    """An order on the paper exchange: what Binance would hold for a live account."""

    account = models.ForeignKey(
        ExchangeAccount, on_delete=models.CASCADE, related_name="paper_orders"
    )
    client_order_id = models.CharField(max_length=36)
    symbol = models.CharField(max_length=20)
    side = models.CharField(max_length=4)
    type = models.CharField(max_length=8)
    price = money(null=True, blank=True)
    quantity = money(null=True, blank=True)
    quote_amount = money(null=True, blank=True)
    status = models.CharField(max_length=16, default="open")
    filled_quantity = money(default=Decimal(0))
    quote_quantity = money(default=Decimal(0))
    fee = money(default=Decimal(0))
    fee_asset = models.CharField(max_length=16, blank=True)
    placed_at_ms = models.BigIntegerField(help_text="exchange time the order was placed")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="paper_order_unique_client_id"
            ),
        ]

    def __str__(self) -> str:
        return f"paper {self.client_order_id} {self.side} {self.type} ({self.status})"
