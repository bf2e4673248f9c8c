"""The paper exchange (the default), with the live adapter's interface.

Market orders fill at the latest price with the taker fee; a resting limit
buy fills at its price once a candle's low reaches it (a sell: the high),
with the maker fee. Balances live on the account; an order they cannot cover
is rejected with the reason. The fill arithmetic is bots.fills, the same the
bot backtest uses.
"""

from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal

from django.db import IntegrityError, transaction

from bots import fills
from bots.models import ExchangeAccount, PaperOrder
from conditions.engine.timeframes import bar_open_floor
from conditions.marketdata.cache import KlineCache
from conditions.marketdata.symbols import SymbolFilters

from .base import DuplicateOrder, OrderNotFound, OrderRejected, OrderRequest, OrderState

logger = logging.getLogger(__name__)

DEFAULT_FEE_RATE = Decimal("0.001")


def _balances(account: ExchangeAccount) -> dict[str, Decimal]:
    return {asset: Decimal(str(amount)) for asset, amount in (account.paper_balances or {}).items()}


MONEY_PLACES = Decimal("1e-18")  # what the money columns keep


def _money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_PLACES, rounding=ROUND_DOWN)


def _store(account: ExchangeAccount, balances: dict[str, Decimal]) -> None:
    account.paper_balances = {
        asset: format(_money(amount).normalize(), "f") for asset, amount in balances.items()
    }
    account.save(update_fields=["paper_balances"])


class PaperExchange:
    name = "paper"

    def __init__(
        self,
        account: ExchangeAccount,
        market: KlineCache,
        *,
        timeframe: str = "5m",
        fee_rate: Decimal = DEFAULT_FEE_RATE,
    ):
        self.account_id = account.pk
        self.market = market
        self.timeframe = timeframe
        self.fee_rate = fee_rate

    def symbol_filters(self, symbol: str) -> SymbolFilters:
        return self.market.source.symbol_filters(symbol)

    def latest_price(self, symbol: str) -> Decimal:
        forming = self.market.forming_candle(symbol, self.timeframe)
        if forming is not None and len(forming):
            return Decimal(str(float(forming["close"].iloc[-1])))
        now = self.market.source.server_time_ms()
        closed = self.market.closed_candles(symbol, self.timeframe, now, history=1)
        if len(closed) == 0:
            raise OrderRejected(f"no price for {symbol} yet")
        return Decimal(str(float(closed["close"].iloc[-1])))

    # --- the interface ------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> OrderState:
        filters = self.symbol_filters(request.symbol)
        now_ms = self.market.source.server_time_ms()
        price = self.latest_price(request.symbol) if request.type == "market" else request.price
        try:
            with transaction.atomic():
                account = ExchangeAccount.objects.select_for_update().get(pk=self.account_id)
                if PaperOrder.objects.filter(
                    account=account, client_order_id=request.client_order_id
                ).exists():
                    raise DuplicateOrder(f"duplicate order {request.client_order_id}")
                balances = _balances(account)
                self._check_funds(request, price, filters, balances)
                order = PaperOrder(
                    account=account,
                    client_order_id=request.client_order_id,
                    symbol=request.symbol,
                    side=request.side,
                    type=request.type,
                    price=request.price,
                    quantity=request.quantity,
                    quote_amount=request.quote_amount,
                    placed_at_ms=now_ms,
                )
                if request.type == "market" and request.side == "buy":
                    # As Binance does with quoteOrderQty: whole lots, at most the quote given.
                    quantity = filters.round_quantity(request.quote_amount / price)
                    if quantity <= 0:
                        raise OrderRejected(
                            f"{request.quote_amount:f} buys less than one lot of {request.symbol}"
                        )
                    fill = fills.market_buy(quantity * price, price, self.fee_rate)
                elif request.type == "market":
                    fill = fills.market_sell(request.quantity, price, self.fee_rate)
                if request.type == "market":
                    self._apply_fill(order, fill, filters, balances)
                    _store(account, balances)
                order.save()
        except IntegrityError:
            raise DuplicateOrder(f"duplicate order {request.client_order_id}") from None
        return self._state(order)

    def get_order(self, symbol: str, client_order_id: str) -> OrderState:
        order = PaperOrder.objects.filter(
            account_id=self.account_id, client_order_id=client_order_id, symbol=symbol
        ).first()
        if order is None:
            raise OrderNotFound(f"no paper order {client_order_id}")
        if order.status == "open" and order.type == "limit":
            order = self._settle_resting(order)
        return self._state(order)

    def open_orders(self, symbol: str) -> dict[str, OrderState]:
        """Its resting limits on the symbol, each settled against the candles first."""
        resting = PaperOrder.objects.filter(
            account_id=self.account_id, symbol=symbol, status="open", type="limit"
        )
        states = [self._state(self._settle_resting(order)) for order in resting]
        return {state.client_order_id: state for state in states if state.status == "open"}

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        self.get_order(symbol, client_order_id)  # a limit reached before the cancel has filled
        with transaction.atomic():
            order = PaperOrder.objects.select_for_update().get(
                account_id=self.account_id, client_order_id=client_order_id
            )
            if order.status == "open":
                order.status = "cancelled"
                order.save(update_fields=["status", "updated_at"])
        return self._state(order)

    # --- internals --------------------------------------------------------------------
    def _check_funds(
        self,
        request: OrderRequest,
        price: Decimal,
        filters: SymbolFilters,
        balances: dict[str, Decimal],
    ) -> None:
        if request.side == "buy":
            need = (
                request.quote_amount
                if request.quote_amount is not None
                else request.quantity * price
            )
            have = balances.get(filters.quote_asset, Decimal(0))
            asset = filters.quote_asset
        else:
            need = request.quantity
            have = balances.get(filters.base_asset, Decimal(0))
            asset = filters.base_asset
        if need > have:
            raise OrderRejected(
                f"insufficient {asset} balance: the order needs {need:f}, the account has {have:f}"
            )
        notional = need if request.side == "buy" else need * price
        if notional < filters.min_notional:
            raise OrderRejected(
                f"order value {notional:f} {filters.quote_asset} is below the minimum {filters.min_notional:f}"
            )

    def _apply_fill(
        self,
        order: PaperOrder,
        fill: fills.Fill,
        filters: SymbolFilters,
        balances: dict[str, Decimal],
    ) -> None:
        """Amounts are cut to the money columns' precision once, here, so the
        order row, the deal's accounting and the balances see the same numbers."""
        quantity, quote, fee = (_money(fill.quantity), _money(fill.quote), _money(fill.fee))
        base, quote_asset = filters.base_asset, filters.quote_asset
        if fill.side == "buy":
            balances[quote_asset] = balances.get(quote_asset, Decimal(0)) - quote
            balances[base] = balances.get(base, Decimal(0)) + quantity - fee
        else:
            balances[base] = balances.get(base, Decimal(0)) - quantity
            balances[quote_asset] = balances.get(quote_asset, Decimal(0)) + quote - fee
        order.status = "filled"
        order.filled_quantity = quantity
        order.quote_quantity = quote
        order.fee = fee
        order.fee_asset = base if fill.fee_asset == "base" else quote_asset

    def _settle_resting(self, order: PaperOrder) -> PaperOrder:
        now_ms = self.market.source.server_time_ms()
        start = int(bar_open_floor(order.placed_at_ms, self.timeframe))
        candles = self.market.source.klines(
            order.symbol, self.timeframe, start_ms=start, limit=1000
        )
        # A limit placed during a bar can only fill from what trades after it: skip that bar.
        candles = candles[candles["open_time"] > start]
        if not any(
            fills.limit_touched(order.side, order.price, Decimal(str(high)), Decimal(str(low)))
            for high, low in zip(candles["high"], candles["low"], strict=True)
        ):
            return order
        filters = self.symbol_filters(order.symbol)
        with transaction.atomic():
            account = ExchangeAccount.objects.select_for_update().get(pk=self.account_id)
            locked = PaperOrder.objects.select_for_update().get(pk=order.pk)
            if locked.status != "open":
                return locked
            balances = _balances(account)
            fill = (
                fills.limit_buy(locked.quantity, locked.price, self.fee_rate)
                if locked.side == "buy"
                else fills.limit_sell(locked.quantity, locked.price, self.fee_rate)
            )
            self._apply_fill(locked, fill, filters, balances)
            _store(account, balances)
            locked.save()
        logger.info(
            "paper %s %s filled at %s (exchange time %s)",
            locked.side,
            locked.client_order_id,
            locked.price,
            now_ms,
        )
        return locked

    @staticmethod
    def _state(order: PaperOrder) -> OrderState:
        return OrderState(
            client_order_id=order.client_order_id,
            exchange_order_id=f"paper-{order.pk}",
            status=order.status,
            filled_quantity=order.filled_quantity,
            quote_quantity=order.quote_quantity,
            fee=order.fee,
            fee_asset=order.fee_asset,
        )
