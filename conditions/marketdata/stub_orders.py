"""The stub's order endpoints: POST, GET and DELETE /api/v3/order, GET /api/v3/openOrders.

Enough of Binance's behaviour to test a live adapter for real: market orders
fill at the replayed price with a 0.1% commission in the received asset,
limit orders rest until a replayed candle reaches their price, a second order
with a client order id already used is refused with -2010 "Duplicate order
sent.", and an unknown one answers -2013 "Order does not exist.". Signatures
are not checked (the stub holds no keys) but an API key header is required.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from conditions.engine.timeframes import bar_open_floor
from conditions.marketdata.stub_endpoints import StubError, StubRequest
from conditions.marketdata.symbols import symbol_filters_from_exchange_info

if TYPE_CHECKING:
    from conditions.marketdata.stub import BinanceStub

COMMISSION = Decimal("0.001")


@dataclass
class StubOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    price: Decimal
    orig_qty: Decimal
    placed_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    commission_asset: str = ""
    update_ms: int = 0
    fills: list[dict] = field(default_factory=list)

    def body(self, with_fills: bool = False) -> dict[str, Any]:
        answer = {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": f"{self.price:f}",
            "origQty": f"{self.orig_qty:f}",
            "executedQty": f"{self.executed_qty:f}",
            "cummulativeQuoteQty": f"{self.quote_qty:f}",
            "status": self.status,
            "timeInForce": "GTC" if self.type == "LIMIT" else "",
            "type": self.type,
            "side": self.side,
            "time": self.placed_ms,
            "transactTime": self.placed_ms,
            "updateTime": self.update_ms or self.placed_ms,
        }
        if with_fills:
            answer["fills"] = self.fills
        return answer


class OrderBook:
    """The stub's orders, by client order id (unique across symbols, as we use them)."""

    def __init__(self, stub: BinanceStub):
        self.stub = stub
        self.orders: dict[str, StubOrder] = {}
        self.placed: list[str] = []  # every accepted order, in order: tests count these
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()

    # --- market view ---------------------------------------------------------
    def _base_timeframe(self, symbol: str) -> str:
        timeframes = self.stub.market.timeframes(symbol)
        if not timeframes:
            raise StubError(400, -1121, "Invalid symbol.")
        return timeframes[0]

    def _candles_since(self, symbol: str, since_ms: int, now_ms: int):
        timeframe = self._base_timeframe(symbol)
        return self.stub.market.klines(
            symbol, timeframe, now_ms, start_ms=int(bar_open_floor(since_ms, timeframe)), limit=1000
        )

    def price(self, symbol: str, now_ms: int) -> Decimal:
        candles = self.stub.market.klines(symbol, self._base_timeframe(symbol), now_ms, limit=1)
        if len(candles) == 0:
            raise StubError(400, -1013, "No price yet for this symbol.")
        return Decimal(str(candles["close"].iloc[-1]))

    # --- fills -------------------------------------------------------------------
    def _fill(self, order: StubOrder, price: Decimal, quantity: Decimal, now_ms: int) -> None:
        """`quantity` more of the order trades at `price`: FILLED once all of
        it has, PARTIALLY_FILLED before."""
        base_asset, quote_asset = self._assets(order.symbol, now_ms)
        quote = quantity * price
        if order.side == "BUY":
            commission, asset = quantity * COMMISSION, base_asset
        else:
            commission, asset = quote * COMMISSION, quote_asset
        order.executed_qty += quantity
        order.quote_qty += quote
        order.commission += commission
        order.commission_asset = asset
        order.status = "FILLED" if order.executed_qty >= order.orig_qty else "PARTIALLY_FILLED"
        order.update_ms = now_ms
        order.fills.append(
            {
                "price": f"{price:f}",
                "qty": f"{quantity:f}",
                "commission": f"{commission:f}",
                "commissionAsset": asset,
                "tradeId": order.order_id * 100 + len(order.fills),
            }
        )

    def fill_partially(self, client_order_id: str, quantity: Decimal, now_ms: int) -> None:
        """Part of a resting limit order trades at its price, as when the book
        on the other side holds less than it asks for (a test's control)."""
        with self._lock:
            order = self.orders[client_order_id]
            if order.type != "LIMIT" or order.status not in ("NEW", "PARTIALLY_FILLED"):
                raise ValueError(f"{client_order_id} is not resting ({order.status})")
            if not 0 < quantity < order.orig_qty - order.executed_qty:
                raise ValueError(f"{quantity} is not part of what {client_order_id} has left")
            self._fill(order, order.price, quantity, now_ms)

    def _assets(self, symbol: str, now_ms: int) -> tuple[str, str]:
        filters = symbol_filters_from_exchange_info(self.stub.market.exchange_info(now_ms), symbol)
        return filters.base_asset, filters.quote_asset

    def _settle_resting(self, order: StubOrder, now_ms: int) -> None:
        if order.status not in ("NEW", "PARTIALLY_FILLED") or order.type != "LIMIT":
            return
        candles = self._candles_since(order.symbol, order.placed_ms, now_ms)
        reached = (
            candles["low"] <= float(order.price)
            if order.side == "BUY"
            else candles["high"] >= float(order.price)
        )
        if bool(reached.any()):
            self._fill(order, order.price, order.orig_qty - order.executed_qty, now_ms)

    # --- endpoints -----------------------------------------------------------------
    def new_order(self, request: StubRequest) -> dict:
        _require_key(request)
        _within_recv_window(request)
        symbol = request.required("symbol").upper()
        side = request.required("side").upper()
        kind = request.required("type").upper()
        client_id = request.params.get("newClientOrderId") or f"stub-{next(self._ids)}"
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT"):
            raise StubError(400, -1106, "Parameter side or type has an unsupported value.")
        filters = symbol_filters_from_exchange_info(
            self.stub.market.exchange_info(request.now_ms), symbol
        )
        with self._lock:
            # As Binance: a client order id must be unique among OPEN orders
            # only; a filled or cancelled order's id can be used again. That is
            # why a client must never re-send a market order it is unsure of.
            previous = self.orders.get(client_id)
            if previous is not None:
                self._settle_resting(previous, request.now_ms)
                if previous.status in ("NEW", "PARTIALLY_FILLED"):
                    raise StubError(400, -2010, "Duplicate order sent.")
            price = self.price(symbol, request.now_ms)
            if kind == "LIMIT":
                price = _decimal(request.required("price"), "price")
                quantity = _decimal(request.required("quantity"), "quantity")
            elif request.params.get("quoteOrderQty"):
                quote = _decimal(request.params["quoteOrderQty"], "quoteOrderQty")
                quantity = (quote / price / filters.step_size).to_integral_value(
                    rounding=ROUND_DOWN
                ) * filters.step_size
            else:
                quantity = _decimal(request.required("quantity"), "quantity")
            if quantity <= 0 or quantity * price < filters.min_notional:
                raise StubError(400, -1013, "Filter failure: NOTIONAL")
            order = StubOrder(
                next(self._ids),
                client_id,
                symbol,
                side,
                kind,
                price if kind == "LIMIT" else Decimal(0),
                quantity,
                request.now_ms,
            )
            if kind == "MARKET":
                self._fill(order, price, quantity, request.now_ms)
            self.orders[client_id] = order
            self.placed.append(client_id)
            return order.body(with_fills=True)

    def query_order(self, request: StubRequest) -> dict:
        _require_key(request)
        order = self._find(request)
        with self._lock:
            self._settle_resting(order, request.now_ms)
            return order.body()

    def open_orders(self, request: StubRequest) -> list[dict]:
        """The symbol's orders still resting (NEW or PARTIALLY_FILLED), as
        Binance's GET /api/v3/openOrders: one request for all of them."""
        _require_key(request)
        symbol = request.required("symbol").upper()
        with self._lock:
            resting = [o for o in self.orders.values() if o.symbol == symbol]
            for order in resting:
                self._settle_resting(order, request.now_ms)
            return [o.body() for o in resting if o.status in ("NEW", "PARTIALLY_FILLED")]

    def cancel_order(self, request: StubRequest) -> dict:
        _require_key(request)
        order = self._find(request, missing=-2011)
        with self._lock:
            self._settle_resting(order, request.now_ms)
            if order.status not in ("NEW", "PARTIALLY_FILLED"):
                raise StubError(400, -2011, "Unknown order sent.")
            order.status = "CANCELED"
            order.update_ms = request.now_ms
            return order.body()

    def my_trades(self, request: StubRequest) -> list[dict]:
        _require_key(request)
        symbol = request.required("symbol").upper()
        order_id = request.params.get("orderId")
        with self._lock:
            orders = [
                o
                for o in self.orders.values()
                if o.symbol == symbol and (order_id is None or str(o.order_id) == order_id)
            ]
            for order in orders:
                self._settle_resting(order, request.now_ms)
            return [
                {
                    **fill,
                    "symbol": symbol,
                    "id": fill["tradeId"],
                    "orderId": order.order_id,
                    "quoteQty": f"{Decimal(fill['qty']) * Decimal(fill['price']):f}",
                    "time": order.update_ms,
                    "isBuyer": order.side == "BUY",
                }
                for order in orders
                for fill in order.fills
            ]

    def _find(self, request: StubRequest, missing: int = -2013) -> StubOrder:
        symbol = request.required("symbol").upper()
        client_id = request.params.get("origClientOrderId")
        order = self.orders.get(client_id) if client_id else None
        if order is None and request.params.get("orderId"):
            order = next(
                (o for o in self.orders.values() if str(o.order_id) == request.params["orderId"]),
                None,
            )
        if order is None or order.symbol != symbol:
            raise StubError(
                400, missing, "Order does not exist." if missing == -2013 else "Unknown order sent."
            )
        return order

    def count(self, client_order_id: str) -> int:
        return self.placed.count(client_order_id)


def _require_key(request: StubRequest) -> None:
    if not any(name.lower() == "x-mbx-apikey" and value for name, value in request.headers.items()):
        raise StubError(401, -2014, "API-key format invalid.")


def _within_recv_window(request: StubRequest) -> None:
    """As Binance: a signed request processed later than `timestamp +
    recvWindow` (wall clock, not the replay clock) is refused, never executed."""
    timestamp = request.params.get("timestamp")
    if not timestamp or not timestamp.isdigit():
        return
    window = int(request.params.get("recvWindow") or 5000)
    if int(timestamp) + window < time.time() * 1000:
        raise StubError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def _decimal(value: str, name: str) -> Decimal:
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise StubError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if not number.is_finite() or number < 0:
        raise StubError(400, -1100, f"Illegal value in parameter '{name}'.")
    return number


def add_order_routes(stub: BinanceStub) -> OrderBook:
    book = OrderBook(stub)
    stub.add_route("POST", "/api/v3/order", book.new_order, weight=1)
    stub.add_route("GET", "/api/v3/order", book.query_order, weight=4)
    stub.add_route("DELETE", "/api/v3/order", book.cancel_order, weight=1)
    stub.add_route("GET", "/api/v3/openOrders", book.open_orders, weight=6)
    stub.add_route("GET", "/api/v3/myTrades", book.my_trades, weight=20)
    return book
