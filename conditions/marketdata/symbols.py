"""Symbols and their exchange filters (PRICE_FILTER, LOT_SIZE, NOTIONAL).

Reading: `symbol_filters_from_exchange_info` turns Binance's exchangeInfo into
a `SymbolFilters` with exact Decimals, which orders are rounded to.
Inventing: replayed candle files have no exchangeInfo, so `guessed_symbol_info`
builds a plausible one from the symbol's quote suffix and its prices.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

logger = logging.getLogger(__name__)

# Longest first, so that "FDUSD" wins over "USD"-like shorter suffixes.
QUOTE_ASSETS: tuple[str, ...] = (
    "FDUSD",
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
)

# Binance's minimum order value by quote asset (NOTIONAL minNotional).
MIN_NOTIONAL_BY_QUOTE: dict[str, str] = {
    "BTC": "0.0001",
    "ETH": "0.001",
    "BNB": "0.01",
    "USDT": "5",
    "USDC": "5",
    "FDUSD": "5",
    "TUSD": "5",
    "BUSD": "10",
    "EUR": "5",
    "TRY": "10",
}

PRICE_DECIMALS = 8


@dataclass(frozen=True)
class SymbolFilters:
    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    def round_price(self, price: Decimal) -> Decimal:
        """Down to the tick: a limit price the exchange accepts."""
        return _floor_to_step(Decimal(price), self.tick_size)

    def round_quantity(self, quantity: Decimal) -> Decimal:
        """Down to the lot step, so an order never spends more than it was given."""
        return _floor_to_step(Decimal(quantity), self.step_size)


def _floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def split_symbol(symbol: str) -> tuple[str, str]:
    """("ETH", "BTC") for "ETHBTC"; the last three letters are the quote when no known suffix fits."""
    symbol = symbol.upper()
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3], symbol[-3:]


def binance_decimal(value: float | Decimal) -> str:
    """A price or quantity as Binance writes it: fixed point with 8 decimals."""
    return f"{value:.{PRICE_DECIMALS}f}"


def _power_of_ten(exponent: int) -> Decimal:
    exponent = max(-PRICE_DECIMALS, min(exponent, 0))
    return Decimal(1).scaleb(exponent)


def guessed_symbol_info(symbol: str, lowest_price: float, typical_price: float) -> dict[str, Any]:
    """An exchangeInfo symbol entry with filters in Binance's style.

    Binance quotes about five significant digits, so the tick is chosen from
    the lowest price seen (it is never coarser than the data). The lot step is
    the power of ten worth about a millionth of the quote asset at a typical
    price, capped at one whole unit, like Binance's altcoin pairs.
    """
    base, quote = split_symbol(symbol)
    lowest = max(lowest_price, 1e-8)
    typical = max(typical_price, 1e-8)
    tick = _power_of_ten(math.floor(math.log10(lowest)) - 4)
    step = _power_of_ten(math.ceil(math.log10(1e-6 / typical)))
    min_notional = Decimal(MIN_NOTIONAL_BY_QUOTE.get(quote, "1"))
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": PRICE_DECIMALS,
        "quoteAsset": quote,
        "quotePrecision": PRICE_DECIMALS,
        "quoteAssetPrecision": PRICE_DECIMALS,
        "baseCommissionPrecision": PRICE_DECIMALS,
        "quoteCommissionPrecision": PRICE_DECIMALS,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": binance_decimal(tick),
                "maxPrice": binance_decimal(Decimal(1_000_000)),
                "tickSize": binance_decimal(tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": binance_decimal(step),
                "maxQty": binance_decimal(Decimal(9_000_000)),
                "stepSize": binance_decimal(step),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": binance_decimal(min_notional),
                "applyMinToMarket": True,
                "maxNotional": binance_decimal(Decimal(9_000_000)),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def symbol_filters_from_exchange_info(info: dict[str, Any], symbol: str) -> SymbolFilters:
    """The filters of `symbol`; KeyError when exchangeInfo does not list it."""
    symbol = symbol.upper()
    entry = next((item for item in info.get("symbols", []) if item.get("symbol") == symbol), None)
    if entry is None:
        raise KeyError(symbol)
    filters = {item.get("filterType"): item for item in entry.get("filters", [])}
    price = filters.get("PRICE_FILTER", {})
    lot = filters.get("LOT_SIZE", {})
    # Binance replaced MIN_NOTIONAL by NOTIONAL in 2023; older snapshots carry the former.
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    return SymbolFilters(
        symbol=symbol,
        status=entry.get("status", "TRADING"),
        base_asset=entry.get("baseAsset", ""),
        quote_asset=entry.get("quoteAsset", ""),
        tick_size=Decimal(price.get("tickSize", "0")),
        min_price=Decimal(price.get("minPrice", "0")),
        max_price=Decimal(price.get("maxPrice", "0")),
        step_size=Decimal(lot.get("stepSize", "0")),
        min_qty=Decimal(lot.get("minQty", "0")),
        max_qty=Decimal(lot.get("maxQty", "0")),
        min_notional=Decimal(notional.get("minNotional", "0")),
    )
