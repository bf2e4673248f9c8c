"""The stub's endpoints: what a handler receives and returns, and Binance's
market-data endpoints (ping, time, exchangeInfo, klines) over a replayed market.

An endpoint is a function from a `StubRequest` (query and form parameters
merged, the stub clock's `now_ms`) to a JSON-able body or a `StubResponse`;
it raises `StubError` for an answer in Binance's error shape. Order endpoints
go in a module of their own beside this one, registered the same way:
`stub.add_route("POST", "/api/v3/order", place_order, weight=1)`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from conditions.engine.timeframes import next_bar_open
from conditions.marketdata.replay import DEFAULT_KLINES_LIMIT, DEFAULT_WEIGHT_LIMIT
from conditions.marketdata.symbols import binance_decimal

if TYPE_CHECKING:
    from conditions.marketdata.stub import BinanceStub

logger = logging.getLogger(__name__)

_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9\-_.]{1,20}$")


class StubError(Exception):
    """A Binance-shaped error answer: HTTP `status`, body {"code", "msg"}."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    headers: Mapping[str, str]
    now_ms: int

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise StubError(400, -1130, "Invalid JSON body.") from None

    def required(self, name: str) -> str:
        value = self.params.get(name, "")
        if value == "":
            raise StubError(
                400,
                -1102,
                f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
            )
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.params.get(name)
        if value is None or value == "":
            return default
        if not value.isdigit() or len(value) > 20:
            raise StubError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
            )
        return int(value)


@dataclass
class StubResponse:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[StubRequest], Any]


@dataclass(frozen=True)
class Route:
    handler: Handler
    weight: int | Callable[[StubRequest], int] = 1


def klines_weight(request: StubRequest) -> int:
    # Binance's older tiered weights, which make big pages visibly costlier.
    limit = request.integer("limit", DEFAULT_KLINES_LIMIT) or DEFAULT_KLINES_LIMIT
    if limit <= 100:
        return 2
    if limit <= 500:
        return 5
    return 10


def kline_rows(candles: pd.DataFrame, interval: str) -> list[list[Any]]:
    """Binance's 12-field rows. Quote volume and taker volumes are synthesized
    (volume times the typical price, half of each to takers) and the trade
    count is 0: candle files do not record them."""
    if len(candles) == 0:
        return []
    opens = candles["open_time"].to_numpy(np.int64)
    closes = next_bar_open(opens, interval) - 1
    rows = []
    for open_ms, close_ms, o, h, lo, c, v in zip(
        opens.tolist(),
        np.asarray(closes).tolist(),
        *(
            candles[name].to_numpy(np.float64).tolist()
            for name in ("open", "high", "low", "close", "volume")
        ),
        strict=True,
    ):
        quote_volume = v * (h + lo + c) / 3
        rows.append(
            [
                open_ms,
                binance_decimal(o),
                binance_decimal(h),
                binance_decimal(lo),
                binance_decimal(c),
                binance_decimal(v),
                close_ms,
                binance_decimal(quote_volume),
                0,
                binance_decimal(v / 2),
                binance_decimal(quote_volume / 2),
                "0",
            ]
        )
    return rows


class _MarketData:
    def __init__(self, stub: BinanceStub) -> None:
        self.stub = stub

    def exchange_info(self, request: StubRequest) -> dict[str, Any]:
        info = self.stub.market.exchange_info(
            request.now_ms, self.stub.weight_limit or DEFAULT_WEIGHT_LIMIT
        )
        wanted = request.params.get("symbol")
        if wanted:
            info["symbols"] = [item for item in info["symbols"] if item["symbol"] == wanted]
            if not info["symbols"]:
                raise StubError(400, -1121, "Invalid symbol.")
        return info

    def klines(self, request: StubRequest) -> list[list[Any]]:
        symbol = request.required("symbol")
        if not _SYMBOL_PATTERN.match(symbol):
            raise StubError(
                400,
                -1100,
                "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
            )
        interval = request.required("interval")
        candles = self.stub.market.klines(
            symbol,
            interval,
            request.now_ms,
            start_ms=request.integer("startTime"),
            end_ms=request.integer("endTime"),
            limit=request.integer("limit", DEFAULT_KLINES_LIMIT) or 0,
        )
        return kline_rows(candles, interval)


def add_market_data_routes(stub: BinanceStub) -> None:
    endpoints = _MarketData(stub)
    stub.add_route("GET", "/api/v3/ping", lambda request: {})
    stub.add_route("GET", "/api/v3/time", lambda request: {"serverTime": request.now_ms})
    stub.add_route("GET", "/api/v3/exchangeInfo", endpoints.exchange_info, weight=20)
    stub.add_route("GET", "/api/v3/klines", endpoints.klines, weight=klines_weight)
    stub.add_route("GET", "/api/v3/uiKlines", endpoints.klines, weight=klines_weight)
