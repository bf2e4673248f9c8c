"""One small interface for every exchange; adapters return dataclasses.

Placing an order has three outcomes a caller must tell apart: it exists
(OrderState), it was refused for good (OrderRejected), or nobody knows
(ExchangeUnavailable: a timeout, a 5xx, a dropped connection). In the last
case the order may exist: look it up by its client_order_id before any retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from conditions.marketdata.symbols import SymbolFilters


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: str  # buy | sell
    type: str  # market | limit
    client_order_id: str
    quantity: Decimal | None = None  # base; sells and limit buys
    quote_amount: Decimal | None = None  # market buys spend this much quote
    price: Decimal | None = None  # limit orders


@dataclass(frozen=True)
class OrderState:
    client_order_id: str
    exchange_order_id: str
    status: str  # open | partially_filled | filled | cancelled | rejected
    filled_quantity: Decimal = Decimal(0)  # gross base
    quote_quantity: Decimal = Decimal(0)  # gross quote
    fee: Decimal = Decimal(0)
    fee_asset: str = ""
    reason: str = ""

    @property
    def average_price(self) -> Decimal | None:
        if self.filled_quantity <= 0:
            return None
        return self.quote_quantity / self.filled_quantity


class ExchangeError(Exception):
    pass


class OrderRejected(ExchangeError):
    """Refused for good (balance, filters, bad parameters): do not retry."""


class OrderNotFound(ExchangeError):
    pass


class DuplicateOrder(ExchangeError):
    """The exchange already has an order with this client_order_id."""


class ExchangeUnavailable(ExchangeError):
    """No answer we can trust: the order may or may not exist."""


class ExchangeRateLimited(ExchangeError):
    def __init__(self, retry_after_s: float):
        super().__init__(f"rate limited: retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


class Exchange(Protocol):
    name: str

    def place_order(self, request: OrderRequest) -> OrderState: ...

    def get_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    def open_orders(self, symbol: str) -> dict[str, OrderState]:
        """The symbol's resting orders by client order id, in one request."""
        ...

    def symbol_filters(self, symbol: str) -> SymbolFilters: ...
