"""What every market-data source offers, and the errors they raise.

Two sources implement `MarketDataSource`: `BinanceSource` (the exchange, or the
local stub that speaks its API) and `ReplaySource` (candle files behind a
controllable clock). The kline cache and the evaluation tasks only see this
interface, so the demo and the tests run the same code as production.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from conditions.engine.timeframes import next_bar_open
from conditions.marketdata.symbols import SymbolFilters, symbol_filters_from_exchange_info

logger = logging.getLogger(__name__)

SERVER_TIME_ATTR = "server_time_ms"


class MarketDataError(Exception):
    """Base class: market data could not be had."""


class InvalidMarketRequest(MarketDataError):
    """The exchange refused the request itself; retrying it unchanged cannot help.

    `code` and `message` are Binance's (`-1121`, "Invalid symbol.").
    """

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(f"Binance error {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class UnknownSymbol(InvalidMarketRequest):
    def __init__(self, symbol: str) -> None:
        super().__init__(-1121, "Invalid symbol.")
        self.symbol = symbol
        if symbol:
            self.args = (f"unknown symbol {symbol!r} (Binance error -1121: Invalid symbol.)",)


class UnknownInterval(InvalidMarketRequest):
    def __init__(self, interval: str, detail: str = "Invalid interval.") -> None:
        super().__init__(-1120, detail)
        self.interval = interval


class RateLimited(MarketDataError):
    """Binance said 429 (too many requests) or 418 (IP banned): wait `retry_after_s`."""

    def __init__(self, retry_after_s: float, status: int = 429) -> None:
        reason = "IP banned" if status == 418 else "rate limited"
        super().__init__(f"Binance {reason} (HTTP {status}): retry after {retry_after_s:g} s")
        self.retry_after_s = float(retry_after_s)
        self.status = status


class MarketDataUnavailable(MarketDataError):
    """The exchange did not answer usefully within the bounded retries."""


class ForeignHostRefused(MarketDataError):
    """A request was about to leave for a host other than the configured base URL."""


@runtime_checkable
class MarketDataSource(Protocol):
    def server_time_ms(self) -> int: ...

    def exchange_info(self) -> dict[str, Any]: ...

    def symbol_filters(self, symbol: str) -> SymbolFilters: ...

    def klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = 1000,
        end_ms: int | None = None,
    ) -> pd.DataFrame: ...

    def closed_klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = 1000,
        end_ms: int | None = None,
    ) -> pd.DataFrame: ...


class FiltersFromExchangeInfo:
    """symbol_filters for a source that has exchange_info: one implementation."""

    def symbol_filters(self, symbol: str) -> SymbolFilters:
        try:
            return symbol_filters_from_exchange_info(self.exchange_info(), symbol)
        except KeyError:
            raise UnknownSymbol(symbol) from None


def drop_forming(candles: pd.DataFrame, timeframe: str, server_time_ms: int) -> pd.DataFrame:
    """Only the candles that had closed at `server_time_ms`, tagged with that time.

    The server time rides along in `frame.attrs["server_time_ms"]` so that a
    caller (the kline cache) knows up to when the answer is complete.
    """
    if len(candles):
        closes = next_bar_open(candles["open_time"].to_numpy(np.int64), timeframe)
        candles = candles.loc[closes <= server_time_ms].reset_index(drop=True)
    candles.attrs[SERVER_TIME_ATTR] = int(server_time_ms)
    return candles
