"""Placing, looking up and cancelling the orders of deals, exactly once.

An order row exists before anything is sent (written with the decision to
place it). Its status says what we know: `new` (never sent), `submitted`
(sent, answer unknown), then what the exchange said. Whenever the answer is
unknown (timeout, 5xx, dropped connection, a worker killed mid-call) the
order is looked up by its client_order_id before any new attempt, and a
"duplicate order" reply means it exists. So a retry, a redelivered task or a
chain that publishes its next step twice never places a second order.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import deals
from .exchanges import exchange_for
from .exchanges.base import (
    DuplicateOrder,
    Exchange,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
)
from .models import Deal, Order

logger = logging.getLogger(__name__)

RECV_WINDOW_MARGIN_MS = 1000
SENT_STATES = ("open", "partially_filled", "filled", "cancelled", "rejected", "failed")


class OutcomeUnknown(Exception):
    """The exchange could not be asked; the caller retries later."""


def _exchange(order: Order) -> Exchange:
    bot = order.deal.bot
    return exchange_for(bot.account, timeframe=bot.base_timeframe)


def _now_ms() -> int:
    from alerts.evaluation import market

    return market().source.server_time_ms()


def build_request(order: Order, exchange: Exchange) -> OrderRequest:
    """Rounded to the symbol's filters; below the minimum it is refused here, never sent."""
    symbol = order.deal.bot.symbol
    filters = exchange.symbol_filters(symbol)
    price = filters.round_price(order.price) if order.price is not None else None
    quantity = filters.round_quantity(order.quantity) if order.quantity is not None else None
    if order.type == "limit" and (not price or price <= 0):
        raise OrderRejected(
            f"limit price {order.price} rounds to nothing at tick {filters.tick_size}"
        )
    if quantity is not None and quantity < filters.min_qty:
        raise OrderRejected(
            f"quantity {order.quantity} is below the minimum lot {filters.min_qty} of {symbol}"
        )
    notional = (
        order.quote_amount
        if order.quote_amount is not None and quantity is None
        else (quantity or 0) * (price or 0)
    )
    if (
        order.type == "limit" or order.quote_amount is not None
    ) and notional < filters.min_notional:
        raise OrderRejected(
            f"order value {notional} is below {symbol}'s minimum notional {filters.min_notional}"
        )
    return OrderRequest(
        symbol=symbol,
        side=order.side,
        type=order.type,
        client_order_id=order.client_order_id,
        quantity=quantity,
        quote_amount=order.quote_amount if order.type == "market" and order.side == "buy" else None,
        price=price,
    )


def place_order(order_id: int) -> None:
    """Send the order at most once per safe moment. Two tasks for one row (a
    chain that published its next step twice, a retry racing a redelivery)
    both try to claim the row; only the one that wins sends."""
    order = Order.objects.select_related("deal__bot__account").get(pk=order_id)
    if order.status in SENT_STATES:
        return  # placed already: a duplicate task
    if unwanted(order):
        cancel_order(order_id)  # the deal no longer wants it: never send it (again)
        return
    exchange = _exchange(order)
    symbol = order.deal.bot.symbol
    if order.status == Order.Status.SUBMITTED:
        # An earlier attempt's answer was lost: does the order exist? Asked
        # first: one that landed is recorded as it is, whatever our own
        # checks would say of sending it now.
        try:
            apply_state(order.pk, _lookup(exchange, symbol, order.client_order_id))
            return
        except OrderNotFound:
            # Not yet, perhaps: the earlier request may still be on its way.
            # Only once the exchange would refuse it is it safe to send again.
            if not _past_recv_window(order):
                raise OutcomeUnknown(
                    f"{order.client_order_id}: not found yet; the earlier attempt may still land"
                ) from None
    try:
        request = build_request(order, exchange)
    except OrderRejected as exc:
        mark_failed(order.pk, Order.Status.REJECTED, str(exc))
        return
    now = timezone.now()
    if order.status == Order.Status.NEW:
        # Claimed only while its deal still wants it: a close committed since
        # `unwanted` looked leaves it to the cancel.
        claimed = (
            Order.objects.filter(pk=order.pk, status=Order.Status.NEW)
            .filter(_still_wanted)
            .update(status=Order.Status.SUBMITTED, submitted_at=now)
        )
    else:
        claimed = (
            Order.objects.filter(
                pk=order.pk, status=Order.Status.SUBMITTED, submitted_at=order.submitted_at
            )
            .filter(_still_wanted)
            .update(submitted_at=now)
        )
    if not claimed:
        raise OutcomeUnknown(f"{order.client_order_id}: another worker is placing it")
    _send(order, exchange, request)


def _send(order: Order, exchange: Exchange, request: OrderRequest) -> None:
    symbol = request.symbol
    try:
        state = exchange.place_order(request)
    except DuplicateOrder:
        state = _lookup(exchange, symbol, order.client_order_id)
    except ExchangeUnavailable as exc:
        logger.warning("order %s: %s; looking it up before any retry", order.client_order_id, exc)
        try:
            state = _lookup(exchange, symbol, order.client_order_id)
        except OrderNotFound:
            # It may still be in flight: the retry looks it up again once the
            # exchange's recvWindow has passed, and only then places it anew.
            raise OutcomeUnknown(
                f"{order.client_order_id} not on the exchange after {exc}"
            ) from None
    except OrderRejected as exc:
        mark_failed(order.pk, Order.Status.REJECTED, str(exc))
        return
    apply_state(order.pk, state)


_still_wanted = Q(cancel_requested_at__isnull=True) & (
    Q(leg__in=deals.EXIT_LEGS) | Q(deal__state__in=[Deal.State.OPENING, Deal.State.OPEN])
)


def unwanted(order: Order) -> bool:
    """An order its deal wants cancelled: marked so, or any order but the
    exit of a deal that is closing (its exit waits for it) or closed."""
    return order.cancel_requested_at is not None or (
        order.leg not in deals.EXIT_LEGS
        and order.deal.state in (Deal.State.CLOSING, Deal.State.CLOSED)
    )


def _past_recv_window(order: Order) -> bool:
    if order.submitted_at is None:
        return True
    waited = (timezone.now() - order.submitted_at).total_seconds() * 1000
    # A margin for clock drift between us and the exchange.
    return waited > settings.BINANCE_RECV_WINDOW_MS + RECV_WINDOW_MARGIN_MS


def retry_delay_s() -> float:
    """Before retrying an order whose outcome is unknown: past the recvWindow."""
    return (settings.BINANCE_RECV_WINDOW_MS + RECV_WINDOW_MARGIN_MS) / 1000


def _lookup(exchange: Exchange, symbol: str, client_order_id: str) -> OrderState:
    try:
        return exchange.get_order(symbol, client_order_id)
    except ExchangeUnavailable as exc:
        raise OutcomeUnknown(str(exc)) from None


def apply_state(order_id: int, state: OrderState, now_ms: int | None = None) -> None:
    """Record what the exchange says; the deal reacts in the same transaction.

    What has traded only grows: an answer that says less than the row holds
    (an older answer arriving late, a cancel's answer without fees) leaves
    the larger amounts. The deal accounts what grew (`deals.on_order_update`)."""
    now_ms = now_ms if now_ms is not None else _now_ms()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        previous = order.status
        if previous in deals.FINAL_ORDER_STATES and state.status != "filled":
            return
        traded_before = deals.Traded.of(order)
        order.exchange_order_id = state.exchange_order_id
        order.status = state.status
        if state.filled_quantity >= order.filled_quantity:
            order.filled_quantity = state.filled_quantity
            order.filled_quote = state.quote_quantity
            order.average_fill_price = state.average_price
        if state.fee >= order.fee and state.fee_asset:
            order.fee = state.fee
            order.fee_asset = state.fee_asset
        if state.status == "filled" and order.filled_at is None:
            order.filled_at = timezone.now()
        order.save()
        deals.on_order_update(order, previous, now_ms, traded_before)


def mark_failed(order_id: int, status: str, error: str) -> None:
    logger.warning("order %s %s: %s", order_id, status, error)
    now_ms = _now_ms()  # read before the locks: it is a request to the exchange
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        previous = order.status
        if previous in SENT_STATES:
            return
        order.status = status
        order.error = error[:500]
        order.save(update_fields=["status", "error", "updated_at"])
        deals.on_order_update(order, previous, now_ms)


def cancel_order(order_id: int) -> None:
    order = Order.objects.select_related("deal__bot__account").get(pk=order_id)
    if order.status == Order.Status.NEW and _cancel_unsent(order):
        return
    order.refresh_from_db()  # a place_order task may have claimed it meanwhile
    if order.status in deals.FINAL_ORDER_STATES:
        return
    exchange = _exchange(order)
    symbol = order.deal.bot.symbol
    try:
        state = exchange.cancel_order(symbol, order.client_order_id)
    except OrderNotFound:
        # Filled before the cancel arrived, or not placed (yet): ask what it is.
        try:
            state = _lookup(exchange, symbol, order.client_order_id)
        except OrderNotFound:
            if order.status == Order.Status.SUBMITTED and not _past_recv_window(order):
                # Its placement may still land: only once the exchange would
                # refuse it is it known never to rest there.
                raise OutcomeUnknown(
                    f"{order.client_order_id}: not on the exchange yet; it may still land"
                ) from None
            if not _cancel_unsent(order):
                raise OutcomeUnknown(
                    f"{order.client_order_id}: a worker is placing it meanwhile"
                ) from None
            return
    except ExchangeUnavailable as exc:
        raise OutcomeUnknown(str(exc)) from None
    apply_state(order.pk, state)


def _cancel_unsent(order: Order) -> bool:
    """An order the exchange never had (`new`, or `submitted` and never
    arrived) is cancelled here, if its row is still as `order` read it, and
    the deal reacts, as to any cancel: a take profit that never went out is
    as gone as a cancelled one. False when the row moved on (a worker
    claimed it, or sent it again, meanwhile)."""
    if order.status not in (Order.Status.NEW, Order.Status.SUBMITTED):
        return False
    now_ms = _now_ms()  # read before the locks: it is a request to the exchange
    with transaction.atomic():
        row = Order.objects.select_for_update().get(pk=order.pk)
        if (row.status, row.submitted_at) != (order.status, order.submitted_at):
            return False
        row.status = Order.Status.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        deals.on_order_update(row, order.status, now_ms)
    return True


def reconcile_orders(limit: int = 500, settle_s: float = 0.0) -> int:
    """Bring orders we are unsure of up to date: `submitted` ones (answer
    lost), resting limits (filled meanwhile?), `new` ones never sent, and
    the cancels the deals asked for.

    A `new` or `submitted` order changed less than `settle_s` ago still has
    its place_order task on the way: it is left to it, so that a burst of
    entries is placed by every worker at once rather than by this loop alone.
    Resting orders are asked for by symbol (one openOrders request per
    account and symbol); only those that moved are looked up one by one."""
    settled = timezone.now() - timedelta(seconds=settle_s)
    # Least recently looked at first: a look that changes nothing still
    # moves the order to the back, so every order is seen however many rest.
    pending = (
        Order.objects.filter(
            Q(status__in=[Order.Status.OPEN, Order.Status.PARTIALLY_FILLED])
            | Q(status__in=[Order.Status.SUBMITTED, Order.Status.NEW], updated_at__lte=settled)
        )
        .select_related("deal__bot__account")
        .order_by("updated_at", "pk")[:limit]
    )
    touched = 0
    resting: dict[tuple[int, str], list[Order]] = {}
    for order in pending:
        if unwanted(order) or order.status in (Order.Status.NEW, Order.Status.SUBMITTED):
            touched += _reconcile_one(order, settled)
        else:
            resting.setdefault((order.deal.bot.account_id, order.deal.bot.symbol), []).append(order)
    for group in resting.values():
        touched += _reconcile_resting(group, settled)
    return touched


def _reconcile_resting(group: list[Order], settled) -> int:
    """One account's resting orders on one symbol: those still resting as
    we know them go to the back; the others are looked up on their own."""
    first = group[0]
    try:
        still = _exchange(first).open_orders(first.deal.bot.symbol)
    except Exception as exc:
        logger.warning("reconcile %s open orders: %s", first.deal.bot.symbol, exc)
        for order in group:
            _to_the_back(order)
        return 0
    touched = 0
    for order in group:
        state = still.get(order.client_order_id)
        if state is not None and not _moved(order, state):
            _to_the_back(order)
            touched += 1
        else:
            touched += _reconcile_one(order, settled)
    return touched


def _reconcile_one(order: Order, settled) -> int:
    try:
        if unwanted(order):
            # Cancelled until it is final (its own task may have given up
            # on an exchange that was down), once that task had its turn.
            if order.updated_at <= settled:
                cancel_order(order.pk)
        elif order.status in (Order.Status.NEW, Order.Status.SUBMITTED):
            place_order(order.pk)
        else:
            state = _lookup(_exchange(order), order.deal.bot.symbol, order.client_order_id)
            if _moved(order, state):
                apply_state(order.pk, state)
            else:
                _to_the_back(order)
        return 1
    except (OutcomeUnknown, OrderNotFound) as exc:
        logger.warning("reconcile %s: %s", order.client_order_id, exc)
    except Exception:
        logger.exception("reconcile %s failed", order.client_order_id)
    _to_the_back(order)
    return 0


def _moved(order: Order, state: OrderState) -> bool:
    """Whether the exchange says more than the row holds."""
    return state.status != order.status or state.filled_quantity != order.filled_quantity


def _to_the_back(order: Order) -> None:
    """Looked at now: the next passes look at the others first."""
    Order.objects.filter(pk=order.pk, updated_at=order.updated_at).update(updated_at=timezone.now())
