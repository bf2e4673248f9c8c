"""Binance (live or testnet) through python-binance.

Every order carries our client_order_id as newClientOrderId, so a lookup by
that id tells whether an order whose answer was lost exists.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException
from django.conf import settings

from conditions.marketdata.binance import BinanceSource, bound_client
from conditions.marketdata.symbols import SymbolFilters

from .base import (
    DuplicateOrder,
    ExchangeRateLimited,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
)

logger = logging.getLogger(__name__)

STATUSES = {
    "NEW": "open",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "cancelled",
    "PENDING_CANCEL": "open",
    "EXPIRED": "cancelled",
    "EXPIRED_IN_MATCH": "cancelled",
    "REJECTED": "rejected",
}


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


class BinanceExchange:
    name = "binance"

    def __init__(
        self, api_key: str, api_secret: str, *, testnet: bool = False, base_url: str | None = None
    ):
        if base_url is None:
            base_url = settings.BINANCE_TESTNET_API_URL if testnet else settings.BINANCE_API_URL
        self.base_url = base_url
        self.client = bound_client(base_url, settings.BINANCE_TIMEOUT_S, api_key, api_secret)
        self.market = BinanceSource(base_url)

    def symbol_filters(self, symbol: str) -> SymbolFilters:
        return self.market.symbol_filters(symbol)

    def place_order(self, request: OrderRequest) -> OrderState:
        params = {
            "symbol": request.symbol,
            "side": request.side.upper(),
            "type": request.type.upper(),
            "newClientOrderId": request.client_order_id,
            "newOrderRespType": "FULL",
            "recvWindow": settings.BINANCE_RECV_WINDOW_MS,
        }
        if request.type == "limit":
            params.update(
                timeInForce="GTC", price=_plain(request.price), quantity=_plain(request.quantity)
            )
        elif request.quote_amount is not None:
            params["quoteOrderQty"] = _plain(request.quote_amount)
        else:
            params["quantity"] = _plain(request.quantity)
        answer = self._call(lambda: self.client.create_order(**params))
        return self._state(answer)

    def get_order(self, symbol: str, client_order_id: str) -> OrderState:
        answer = self._call(
            lambda: self.client.get_order(symbol=symbol, origClientOrderId=client_order_id)
        )
        state = self._state(answer)
        if state.filled_quantity > 0 and not answer.get("fills"):
            state = self._with_trade_fees(symbol, answer, state)
        return state

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        """What was left of the order is cancelled; what had traded stays, with
        its fees from the account's trades (the cancel's answer has none)."""
        answer = self._call(
            lambda: self.client.cancel_order(symbol=symbol, origClientOrderId=client_order_id)
        )
        state = self._state(answer)
        if state.filled_quantity > 0 and not answer.get("fills"):
            state = self._with_trade_fees(symbol, answer, state)
        return state

    def open_orders(self, symbol: str) -> dict[str, OrderState]:
        """GET /api/v3/openOrders for one symbol: weight 6 for all of its
        resting orders, where a lookup each costs 4. No fees (fills are not
        in it): an order that moved is looked up on its own."""
        answer = self._call(lambda: self.client.get_open_orders(symbol=symbol))
        return {state.client_order_id: state for state in map(self._state, answer)}

    # --- plumbing -----------------------------------------------------------------
    def _call(self, request):
        try:
            return request()
        except BinanceAPIException as exc:
            raise self._translate(exc) from None
        except (
            requests.Timeout,
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise ExchangeUnavailable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        except BinanceRequestException as exc:
            raise ExchangeUnavailable(f"unreadable answer: {exc.message[:200]}") from None

    @staticmethod
    def _translate(exc: BinanceAPIException) -> Exception:
        message = f"Binance {exc.code}: {exc.message}"
        if exc.status_code in (429, 418):
            header = exc.response.headers.get("Retry-After") if exc.response is not None else None
            try:
                retry_after = float(header) if header else 60.0
            except ValueError:
                retry_after = 60.0
            return ExchangeRateLimited(retry_after)
        if exc.status_code >= 500:
            return ExchangeUnavailable(message)
        if exc.code == -2010 and "duplicate" in (exc.message or "").lower():
            return DuplicateOrder(message)
        if exc.code in (-2013, -2011):
            return OrderNotFound(message)
        return OrderRejected(message)

    @staticmethod
    def _state(answer: dict) -> OrderState:
        fills = answer.get("fills") or []
        fee = sum((Decimal(f["commission"]) for f in fills), Decimal(0))
        fee_asset = fills[0]["commissionAsset"] if fills else ""
        return OrderState(
            client_order_id=answer["clientOrderId"],
            exchange_order_id=str(answer["orderId"]),
            status=STATUSES.get(answer["status"], "open"),
            filled_quantity=Decimal(answer.get("executedQty", "0")),
            quote_quantity=Decimal(answer.get("cummulativeQuoteQty", "0")),
            fee=fee,
            fee_asset=fee_asset,
        )

    def _with_trade_fees(self, symbol: str, answer: dict, state: OrderState) -> OrderState:
        """GET /order carries no commission; the account's trades for the order do."""
        try:
            trades = self._call(
                lambda: self.client.get_my_trades(symbol=symbol, orderId=answer["orderId"])
            )
        except (OrderRejected, OrderNotFound):
            return state
        fee = sum((Decimal(t["commission"]) for t in trades), Decimal(0))
        asset = trades[0]["commissionAsset"] if trades else ""
        return OrderState(**{**state.__dict__, "fee": fee, "fee_asset": asset})
