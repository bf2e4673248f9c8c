"""The DCA deal state machine: waiting_entry -> opening -> open -> closing -> closed.

Every decision writes its order rows and its DealEvent in one transaction with
the deal locked; placing an order is a separate task queued after commit.
Fills come back through `on_order_update`, which is idempotent: what an order
has traded is accounted as it grows (a partial fill, then the rest), each part
once, against what its row held before, under the lock.

A sell never races the take profit resting on the exchange: a re-priced take
profit (after a safety fill) and a market exit (stop loss, manual close) are
placed once the take profit still resting is cancelled, for what is left
after whatever it sold meanwhile. An exchange holds a resting sell's base
(Binance does), so sending both at once could see the exit refused, or, if
the take profit filled first, sell more than the deal holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from conditions.engine.normalize import normalize_condition
from conditions.marketdata.symbols import split_symbol
from conditions.models import ConditionSubscription
from conditions.services import register_canonical, subscribe

from . import dca
from .models import Bot, Deal, DealEvent, Order

logger = logging.getLogger(__name__)

FINAL_ORDER_STATES = ("filled", "cancelled", "rejected", "failed")


def client_order_id(deal_id: int, leg: str) -> str:
    """Deterministic per deal and leg, within Binance's 36 characters of [A-Za-z0-9_-]."""
    return f"tdn-{deal_id}-{leg}"


def exchange_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def bot_settings(bot: Bot) -> dca.DcaSettings:
    return dca.validate_settings(bot.settings, symbol=bot.symbol, base_timeframe=bot.base_timeframe)


def transition(deal: Deal, to_state: str, cause: str, **detail) -> None:
    DealEvent.objects.create(
        deal=deal, from_state=deal.state, to_state=to_state, cause=cause, detail=detail
    )
    deal.state = to_state


def record(deal: Deal, cause: str, detail: dict) -> None:
    """An event that does not change the deal's state (a fill, a trail started)."""
    DealEvent.objects.create(
        deal=deal, from_state=deal.state, to_state=deal.state, cause=cause, detail=detail
    )


def new_order(deal: Deal, leg: str, side: str, type_: str, **amounts) -> Order:
    order = Order.objects.create(
        deal=deal,
        leg=leg,
        side=side,
        type=type_,
        client_order_id=client_order_id(deal.pk, leg),
        **amounts,
    )
    transaction.on_commit(lambda: _queue_placement(order.pk), robust=True)
    return order


def _queue_placement(order_id: int) -> None:
    from .tasks import place_order

    place_order.delay(order_id)


# --- opening --------------------------------------------------------------------------
def open_deal(bot_id: int, entry_key: str, now_ms: int, cause: str) -> Deal | None:
    """Open a deal unless the bot is not running, has max_active_deals open, or
    is cooling down. Two workers with the same entry_key open one deal."""
    try:
        with transaction.atomic():
            bot = Bot.objects.select_for_update().get(pk=bot_id)
            if bot.status != Bot.Status.RUNNING:
                return None
            settings = bot_settings(bot)
            existing = Deal.objects.filter(bot=bot, entry_key=entry_key).first()
            if existing:
                return existing
            if (
                Deal.objects.filter(bot=bot).exclude(state=Deal.State.CLOSED).count()
                >= settings.max_active_deals
            ):
                logger.info(
                    "bot %s: entry %s ignored, %d deal(s) already open",
                    bot.pk,
                    entry_key,
                    settings.max_active_deals,
                )
                return None
            last_close = (
                Deal.objects.filter(bot=bot, state=Deal.State.CLOSED)
                .order_by("-closed_at")
                .values_list("closed_at", flat=True)
                .first()
            )
            if last_close and (now_ms / 1000 - last_close.timestamp()) < settings.cooldown:
                logger.info("bot %s: entry %s ignored, cooling down", bot.pk, entry_key)
                return None
            deal = Deal.objects.create(bot=bot, entry_key=entry_key, state=Deal.State.WAITING_ENTRY)
            transition(deal, Deal.State.OPENING, cause, entry_key=entry_key)
            deal.save(update_fields=["state"])
            new_order(deal, "base", "buy", "market", quote_amount=settings.base_order_size)
            return deal
    except IntegrityError:
        return Deal.objects.filter(bot_id=bot_id, entry_key=entry_key).first()


# --- fills ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Traded:
    """What an order has traded so far: gross base, gross quote, fee."""

    quantity: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)

    @classmethod
    def of(cls, order: Order) -> Traded:
        return cls(order.filled_quantity, order.filled_quote, order.fee)

    def since(self, before: Traded) -> Traded | None:
        """What traded after `before`, or None when nothing did."""
        if self.quantity <= before.quantity and self.fee <= before.fee:
            return None
        return Traded(
            max(self.quantity - before.quantity, Decimal(0)),
            max(self.quote - before.quote, Decimal(0)),
            max(self.fee - before.fee, Decimal(0)),
        )


def on_order_update(
    order: Order, previous_status: str, now_ms: int, traded_before: Traded = Traded()
) -> None:
    """React to an order whose row just changed; runs inside the transaction
    that changed it, with the order locked, so each part of a fill is
    accounted once."""
    deal = Deal.objects.select_for_update().select_related("bot").get(pk=order.deal_id)
    traded = Traded.of(order).since(traded_before)
    if deal.state == Deal.State.CLOSED:
        if traded is not None:
            # A resting order that traded before its cancel landed: the deal's
            # figures are final, what it traded is on the record for the trader.
            logger.warning("deal %s: %s traded after the deal closed", deal.pk, order.leg)
            record(deal, "fill_after_close", _fill_detail(order, traded))
        return
    if traded is not None:
        _account(deal, order, traded)
        deal.save()
    if previous_status == order.status:
        return
    settings = bot_settings(deal.bot)
    ended_in_part = (
        order.status == Order.Status.CANCELLED
        and order.type == Order.Type.MARKET
        and order.filled_quantity > 0
    )
    if order.status == Order.Status.FILLED or ended_in_part:
        # (a market order the exchange ended part-way, the book exhausted,
        # has done all it will: what it traded counts as its fill)
        _filled(deal, settings, order, now_ms)
    elif order.leg == "base" and order.status in FINAL_ORDER_STATES:
        transition(deal, Deal.State.CLOSED, f"base_order_{order.status}", error=order.error)
        deal.close_reason = Deal.CloseReason.FAILED
        deal.closed_at = exchange_time(now_ms)
        deal.save()
        return
    elif order.leg in _EXIT_REASONS and order.status in FINAL_ORDER_STATES:
        # The exit was refused (below the lot or the minimum value: dust; or
        # the balance) or ended with nothing sold: the deal is closed on its
        # reason with what it still holds on the record, not left closing.
        record(
            deal,
            "exit_refused",
            {"leg": order.leg, "error": order.error, "held": str(_base_held(deal))},
        )
        _closed(deal, _EXIT_REASONS[order.leg], now_ms)
        return
    elif order.status in (Order.Status.REJECTED, Order.Status.FAILED):
        record(deal, f"{order.leg}_{order.status}", {"error": order.error})
    if order.status in FINAL_ORDER_STATES:
        _order_ended(deal, settings, order, now_ms)


def _filled(deal: Deal, settings: dca.DcaSettings, order: Order, now_ms: int) -> None:
    if order.leg == "base":
        _opened(deal, settings, order, now_ms)
    elif order.side == "buy":
        if deal.state == Deal.State.OPEN:
            _safety_filled(deal, settings, order, now_ms)
        # closing: what it bought is accounted, and sold by the exit
    elif _is_take_profit(order):
        _take_profit_filled(deal, order, now_ms)
    else:
        _closed(deal, _EXIT_REASONS.get(order.leg, Deal.CloseReason.MANUAL), now_ms)


def _take_profit_filled(deal: Deal, order: Order, now_ms: int) -> None:
    """The take profit sold all it was sized for. The deal is closed, unless
    it bought more since (a safety filled while this one's cancel was on its
    way, or a resting safety in part): then that is sold too, by a new take
    profit, or by the exit when closing. What the exchange's lot rounding
    left of its size is dust, not more."""
    rounding = (order.quantity or Decimal(0)) - order.filled_quantity
    held = _base_held(deal)
    if held <= rounding:
        _closed(deal, Deal.CloseReason.TAKE_PROFIT, now_ms)
        return
    record(deal, "take_profit_short", {"leg": order.leg, "held": str(held)})
    if deal.state == Deal.State.OPEN and not _live_take_profits(deal).exists():
        _place_take_profit(deal)


def _order_ended(deal: Deal, settings: dca.DcaSettings, order: Order, now_ms: int) -> None:
    """An order is final. A closing deal exits once none of its orders is
    live. An open one whose take profit the deal had cancelled (to re-price
    it) rests a new one at its current price; one the exchange ended by
    itself (expired, self-trade prevention) or refused is not re-placed,
    which could loop: it is on the record, and the stop loss still stands."""
    if deal.state == Deal.State.CLOSING:
        _exit_when_clear(deal, now_ms)
    elif (
        deal.state == Deal.State.OPEN
        and _is_take_profit(order)
        and order.status == Order.Status.CANCELLED
        and settings.trailing_deviation is None
        and not _live_take_profits(deal).exists()
    ):
        if order.cancel_requested_at is not None:
            _place_take_profit(deal)
        else:
            record(deal, "take_profit_ended_by_exchange", {"leg": order.leg})


def _account(deal: Deal, order: Order, traded: Traded) -> None:
    """Fees come out of what is received: base on buys, quote on sells."""
    base_asset, quote_asset = split_symbol(deal.bot.symbol)
    if order.side == "buy":
        deal.quote_spent += traded.quote
        deal.base_bought += traded.quantity - (
            traded.fee if order.fee_asset == base_asset else Decimal(0)
        )
    else:
        deal.quote_received += traded.quote - (
            traded.fee if order.fee_asset == quote_asset else Decimal(0)
        )
    record(deal, "fill", _fill_detail(order, traded))


def _fill_detail(order: Order, traded: Traded) -> dict:
    return {
        "leg": order.leg,
        "status": order.status,
        "quantity": str(traded.quantity),
        "quote": str(traded.quote),
        "fee": str(traded.fee),
        "fee_asset": order.fee_asset,
    }


def _base_held(deal: Deal) -> Decimal:
    """What the deal bought, less what its sells have sold, partly or wholly."""
    sold = deal.orders.filter(side="sell").aggregate(sold=Sum("filled_quantity"))["sold"]
    return deal.base_bought - (sold or Decimal(0))


def _reprice(deal: Deal, settings: dca.DcaSettings) -> None:
    deal.average_entry_price = dca.average_entry(deal.quote_spent, deal.base_bought)
    deal.take_profit_price = dca.take_profit_price(
        settings, deal.average_entry_price, deal.base_fill_price
    )
    deal.stop_loss_price = dca.stop_loss_price(settings, deal.average_entry_price)


def _opened(deal: Deal, settings: dca.DcaSettings, order: Order, now_ms: int) -> None:
    deal.base_fill_price = order.average_fill_price
    deal.opened_at = exchange_time(now_ms)
    _reprice(deal, settings)
    transition(deal, Deal.State.OPEN, "base_filled", price=str(order.average_fill_price))
    deal.save()
    ladder = dca.safety_ladder(settings, deal.base_fill_price)
    if settings.safety_mode == "triggered":
        for level in ladder:
            _subscribe_level(deal, "safety", level.n, level.price)
    else:
        for level in ladder[: settings.active_safety_orders]:
            _resting_safety(deal, level)
    if settings.trailing_deviation is None:
        _place_take_profit(deal)
    _subscribe_stop_loss(deal)


def _safety_filled(deal: Deal, settings: dca.DcaSettings, order: Order, now_ms: int) -> None:
    deal.safety_orders_filled += 1
    _reprice(deal, settings)
    deal.trailing_high = None  # a safety fill resets a trailing take profit that had started
    record(
        deal,
        "safety_filled",
        {
            "leg": order.leg,
            "average": str(deal.average_entry_price),
            "take_profit": str(deal.take_profit_price),
        },
    )
    deal.save()
    if settings.safety_mode == "resting":
        ladder = dca.safety_ladder(settings, deal.base_fill_price)
        placed = set(deal.orders.filter(leg__startswith="so").values_list("leg", flat=True))
        upcoming = [level for level in ladder if f"so{level.n}" not in placed]
        if upcoming:
            _resting_safety(deal, upcoming[0])
    if settings.trailing_deviation is None:
        if _live_take_profits(deal).exists():
            _cancel_take_profits(deal)  # the new one rests once it is off (_order_ended)
        else:
            _place_take_profit(deal)
    _subscribe_stop_loss(deal)


def _closed(deal: Deal, reason: str, now_ms: int) -> None:
    deal.realized_pnl_quote = deal.quote_received - deal.quote_spent
    deal.realized_pnl_pct = (
        deal.realized_pnl_quote / deal.quote_spent * 100 if deal.quote_spent else Decimal(0)
    )
    deal.close_reason = reason
    deal.closed_at = exchange_time(now_ms)
    transition(deal, Deal.State.CLOSED, reason, pnl_quote=str(deal.realized_pnl_quote))
    deal.save()
    ConditionSubscription.objects.filter(
        bot=deal.bot, active=True, bot_config__deal_id=deal.pk
    ).update(active=False)
    for order in _live_resting(deal):
        _request_cancel(order)


# --- orders a deal places ----------------------------------------------------------------
def _resting_safety(deal: Deal, level: dca.SafetyLevel) -> Order:
    quantity = level.quote / level.price
    return new_order(
        deal,
        f"so{level.n}",
        "buy",
        "limit",
        price=level.price,
        quantity=quantity,
        quote_amount=level.quote,
    )


def _place_take_profit(deal: Deal) -> Order:
    count = deal.orders.filter(leg__startswith="tp").count()
    return new_order(
        deal,
        f"tp{count + 1}",
        "sell",
        "limit",
        price=deal.take_profit_price,
        quantity=_base_held(deal),
    )


def _is_take_profit(order: Order) -> bool:
    return order.leg.startswith("tp") and order.type == Order.Type.LIMIT


def _live_take_profits(deal: Deal):
    return _live_resting(deal).filter(leg__startswith="tp")


def _live_resting(deal: Deal):
    """The deal's limit orders that are, or may be, on the exchange."""
    return _live_orders(deal).filter(type=Order.Type.LIMIT)


def _live_orders(deal: Deal):
    """The deal's orders not final yet, its exit aside."""
    return deal.orders.exclude(status__in=FINAL_ORDER_STATES).exclude(leg__in=_EXIT_REASONS)


def _cancel_take_profits(deal: Deal) -> None:
    for order in _live_take_profits(deal):
        _request_cancel(order)


def _request_cancel(order: Order) -> None:
    """The order is marked as one the deal wants cancelled (reconciliation
    repeats the cancel until it is final, and nothing sends it), and the
    cancel is queued after commit. The mark is written here only if the
    row is free: every path locks an order before its deal, so waiting for
    it under the deal's lock could deadlock; a row busy now is marked after
    commit. A closing or closed deal's orders are cancelled by
    reconciliation whether marked or not."""
    from .tasks import cancel_order

    now = timezone.now()
    free = Order.objects.select_for_update(skip_locked=True).filter(pk=order.pk)
    if free.exists():
        free.filter(cancel_requested_at__isnull=True).update(cancel_requested_at=now)

    def mark_and_queue() -> None:
        Order.objects.filter(pk=order.pk, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now, updated_at=now
        )
        cancel_order.delay(order.pk)

    transaction.on_commit(mark_and_queue, robust=True)


def _subscribe_level(deal: Deal, role: str, level: int, price: Decimal) -> None:
    """A registry price condition ("close crosses below price_n"), shared with
    every other bot watching the same level."""
    bot = deal.bot
    op = "crosses_below" if role == "safety" else "lte"
    canonical = normalize_condition(
        {"type": "price", "operator": op, "compareWith": "value", "compareValue": float(price)},
        symbol=bot.symbol,
        timeframe=bot.base_timeframe,
    )
    condition, _ = register_canonical(canonical)
    subscribe(
        user=bot.user,
        bot=bot,
        condition=condition,
        bot_type=bot.kind,
        bot_config={"role": role, "deal_id": deal.pk, "level": level},
    )


def _subscribe_stop_loss(deal: Deal) -> None:
    ConditionSubscription.objects.filter(
        bot=deal.bot, active=True, bot_config__deal_id=deal.pk, bot_config__role="stop_loss"
    ).update(active=False)
    if deal.stop_loss_price is not None:
        _subscribe_level(deal, "stop_loss", deal.safety_orders_filled, deal.stop_loss_price)


# --- triggers from the registry ------------------------------------------------------------
def on_safety_trigger(deal_id: int, level: int) -> Order | None:
    with transaction.atomic():
        deal = Deal.objects.select_for_update().select_related("bot").get(pk=deal_id)
        if deal.state != Deal.State.OPEN:
            return None
        settings = bot_settings(deal.bot)
        ladder = {lvl.n: lvl for lvl in dca.safety_ladder(settings, deal.base_fill_price)}
        if level not in ladder or deal.orders.filter(leg=f"so{level}").exists():
            return None
        ConditionSubscription.objects.filter(
            bot=deal.bot,
            active=True,
            bot_config__deal_id=deal.pk,
            bot_config__level=level,
            bot_config__role="safety",
        ).update(active=False)
        return new_order(deal, f"so{level}", "buy", "market", quote_amount=ladder[level].quote)


def close_deal(deal_id: int, reason: str, cause: str) -> Deal | None:
    """Exit at market (stop loss, or a trader's manual close). Its resting
    orders are cancelled first, and the sell goes once none rests, for what
    the deal then holds. The deal, now closing (or closed, with nothing to
    sell); None if it was not open."""
    with transaction.atomic():
        deal = Deal.objects.select_for_update().select_related("bot").get(pk=deal_id)
        if deal.state != Deal.State.OPEN:
            return None
        _start_closing(deal, reason, cause)
        _exit_when_clear(deal)
        return deal


def _start_closing(deal: Deal, reason: str, cause: str, **detail) -> None:
    # The reason is kept for the exit, which may wait for the cancels; a take
    # profit that fills first closes the deal as such.
    transition(deal, Deal.State.CLOSING, cause, reason=reason, **detail)
    deal.save(update_fields=["state", "updated_at"])
    ConditionSubscription.objects.filter(
        bot=deal.bot, active=True, bot_config__deal_id=deal.pk
    ).update(active=False)
    for order in _live_orders(deal):
        _request_cancel(order)  # a market buy already sent finds itself filled


_EXIT_LEGS = {
    Deal.CloseReason.STOP_LOSS: "sl",
    Deal.CloseReason.TAKE_PROFIT: "tptrail",
    Deal.CloseReason.MANUAL: "close",
}
_EXIT_REASONS = {leg: reason for reason, leg in _EXIT_LEGS.items()}
EXIT_LEGS = tuple(_EXIT_REASONS)


def _exit_when_clear(deal: Deal, now_ms: int | None = None) -> Order | None:
    """A closing deal's sell at market, once none of its other orders is
    live and no exit has gone out yet; closed at once when nothing is left
    to sell."""
    if _live_orders(deal).exists() or deal.orders.filter(leg__in=_EXIT_REASONS).exists():
        return None
    closing = deal.events.filter(from_state=Deal.State.OPEN, to_state=Deal.State.CLOSING).last()
    reason = (closing.detail if closing else {}).get("reason", Deal.CloseReason.MANUAL)
    held = _base_held(deal)
    if held <= 0:
        # Nothing left to sell (the take profit sold it all, or dust only).
        # (by hand or on a trigger, no exchange answer carries the time: ours)
        _closed(deal, reason, now_ms or int(timezone.now().timestamp() * 1000))
        return None
    return new_order(deal, _EXIT_LEGS.get(reason, "close"), "sell", "market", quantity=held)


def on_bar_closed(deal_id: int, high: Decimal, close: Decimal, now_ms: int) -> Order | None:
    """A trailing take profit, at a closed bar: once a high reaches the take-profit
    price, follow the highest high; exit at market when a close falls
    trailing_deviation % below it (BOTS.md)."""
    with transaction.atomic():
        deal = Deal.objects.select_for_update().select_related("bot").get(pk=deal_id)
        settings = bot_settings(deal.bot)
        if (
            deal.state != Deal.State.OPEN
            or settings.trailing_deviation is None
            or deal.take_profit_price is None
        ):
            return None
        if deal.trailing_high is None and high >= deal.take_profit_price:
            deal.trailing_high = high
            record(deal, "trailing_started", {"high": str(high)})
        elif deal.trailing_high is not None:
            deal.trailing_high = max(deal.trailing_high, high)
        deal.save(update_fields=["trailing_high", "updated_at"])
        if deal.trailing_high is None or close > deal.trailing_high * (
            1 - settings.trailing_deviation / 100
        ):
            return None
        # Decided and begun under the same lock: a safety fill in between
        # would have reset the trail.
        _start_closing(
            deal,
            Deal.CloseReason.TAKE_PROFIT,
            "trailing_take_profit",
            high=str(deal.trailing_high),
        )
        return _exit_when_clear(deal, now_ms)


def open_deals_query():
    return Deal.objects.filter(
        Q(state=Deal.State.OPEN) | Q(state=Deal.State.OPENING) | Q(state=Deal.State.CLOSING)
    )
