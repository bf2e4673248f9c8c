"""Candle files replayed behind a clock: the one place that decides what a
market "looks like" at a given moment.

`ReplayMarket` answers "which klines could Binance have shown at time T": the
candles that had opened by T, the last one still forming. The forming candle
never shows its final values. It is drawn as it would look part-way, the
elapsed fraction f = (T - open) / (close_time - open) of its bar:

- open as recorded;
- close moved from open toward the final close by f;
- high and low start at max/min(open, close) and stretch toward the final
  high and low by f, so they always contain open and close and never exceed
  the recorded extremes;
- volume is the final volume times f.

Values are kept at Binance's 8 decimals, so what the stub sends as strings and
what `ReplaySource` returns as floats are the same numbers. Intervals coarser
than a file's are resampled from it on UTC boundaries (CONDITIONS.md section
5); a coarser bar still forming is built from the base candles so far, the
last of them itself part-way.

Both the HTTP stub and `ReplaySource` use this class, so they agree by
construction.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conditions.engine.candles import (
    COLUMNS,
    PRICE_COLUMNS,
    CandleFileError,
    load_candles,
    parse_file_name,
)
from conditions.engine.timeframes import (
    DAY_MS,
    TIMEFRAMES,
    next_bar_open,
    normalize_timeframe,
    resample,
    timeframe_ms,
)
from conditions.marketdata.base import (
    FiltersFromExchangeInfo,
    InvalidMarketRequest,
    UnknownInterval,
    UnknownSymbol,
    drop_forming,
)
from conditions.marketdata.symbols import (
    PRICE_DECIMALS,
    guessed_symbol_info,
)

logger = logging.getLogger(__name__)

CANDLE_SUFFIXES = (".csv", ".json")
MAX_KLINES_LIMIT = 1000
DEFAULT_KLINES_LIMIT = 500
DEFAULT_WEIGHT_LIMIT = 1200


def as_epoch_ms(value: int | float | str | datetime) -> int:
    """Epoch milliseconds from ms, an ISO-8601 time ("2018-01-10T12:00:00Z"; naive means UTC) or a datetime."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"not an ISO-8601 time or epoch milliseconds: {text!r} (e.g. 2018-01-10T12:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    raise ValueError(f"not a time: {value!r}")


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Clock:
    """Market time in epoch ms that runs `speed` times faster than real time.

    Speed 0 freezes it: only `set` and `advance` move it, which is what tests
    use to step time exactly.
    """

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._lock = threading.Lock()
        self._anchor_ms = float(start_ms)
        self._anchor_real = time.monotonic()
        self._speed = float(speed)

    def now_ms(self) -> int:
        with self._lock:
            return int(
                self._anchor_ms + (time.monotonic() - self._anchor_real) * 1000 * self._speed
            )

    @property
    def speed(self) -> float:
        return self._speed

    def set(self, ms: int) -> None:
        with self._lock:
            self._anchor_ms = float(ms)
            self._anchor_real = time.monotonic()

    def advance(self, ms: int) -> None:
        self.set(self.now_ms() + ms)

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        now = self.now_ms()
        with self._lock:
            self._anchor_ms = float(now)
            self._anchor_real = time.monotonic()
            self._speed = float(speed)


def candle_paths(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """Candle files named SYMBOL-TIMEFRAME.csv/.json, from files and directories."""
    if isinstance(sources, str | Path):
        sources = [sources]
    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in CANDLE_SUFFIXES)
            if not found:
                raise CandleFileError(f"{path}: no .csv or .json candle files in this directory")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise CandleFileError(f"{path}: no such file or directory")
    return paths


def _at_binance_precision(values: np.ndarray) -> np.ndarray:
    # Formatting then parsing gives exactly the float a client gets back from
    # Binance's 8-decimal strings; numpy's round can be one ulp away from it.
    return np.array([float(f"{v:.{PRICE_DECIMALS}f}") for v in values], dtype=np.float64)


def _with_binance_precision(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in PRICE_COLUMNS:
        frame[column] = _at_binance_precision(frame[column].to_numpy(np.float64))
    return frame


def _can_build(source_tf: str, target_tf: str) -> bool:
    """Whether every `target_tf` bar is a whole number of `source_tf` bars."""
    if source_tf == target_tf:
        return True
    if source_tf == "1M":
        return False
    source_ms = timeframe_ms(source_tf)
    if target_tf == "1M":
        return source_ms <= DAY_MS and DAY_MS % source_ms == 0
    target_ms = timeframe_ms(target_tf)
    if target_tf == "1w":
        return source_ms <= DAY_MS and DAY_MS % source_ms == 0
    return target_ms > source_ms and target_ms % source_ms == 0


def forming_view(
    candle: dict[str, float], open_ms: int, close_ms: int, now_ms: int
) -> dict[str, float]:
    """A candle as it looked at `now_ms`, part-way through its bar (see the module doc)."""
    fraction = min(max((now_ms - open_ms) / max(close_ms - open_ms, 1), 0.0), 1.0)
    open_, close = candle["open"], candle["close"]
    close_now = open_ + (close - open_) * fraction
    top, bottom = max(open_, close), min(open_, close)
    view = {
        "open": open_,
        "close": close_now,
        "high": max(open_, close_now) + (candle["high"] - top) * fraction,
        "low": min(open_, close_now) - (bottom - candle["low"]) * fraction,
        "volume": candle["volume"] * fraction,
    }
    rounded = dict(zip(view, _at_binance_precision(np.array(list(view.values()))), strict=True))
    # Rounding must not let the partial extremes escape the recorded ones.
    rounded["high"] = min(max(rounded["high"], rounded["open"], rounded["close"]), candle["high"])
    rounded["low"] = max(min(rounded["low"], rounded["open"], rounded["close"]), candle["low"])
    return rounded


class ReplayMarket:
    """Candle files by symbol and timeframe, and what they show at a moment."""

    def __init__(self, frames: dict[tuple[str, str], pd.DataFrame]) -> None:
        if not frames:
            raise CandleFileError("no candle files given")
        self._files: dict[str, dict[str, pd.DataFrame]] = {}
        for (symbol, tf), frame in frames.items():
            self._files.setdefault(symbol.upper(), {})[normalize_timeframe(tf)] = (
                _with_binance_precision(frame[COLUMNS].reset_index(drop=True))
            )
        self._resampled: dict[tuple[str, str], tuple[str, pd.DataFrame]] = {}
        self._lock = threading.Lock()
        self._symbol_info = {symbol: self._guess_info(symbol) for symbol in self._files}

    @classmethod
    def from_paths(cls, sources: str | Path | Iterable[str | Path]) -> ReplayMarket:
        """Load SYMBOL-TIMEFRAME files; CandleFileError (one line) for anything unusable."""
        frames: dict[tuple[str, str], pd.DataFrame] = {}
        for path in candle_paths(sources):
            symbol, tf = parse_file_name(path)
            if symbol is None or tf is None:
                raise CandleFileError(
                    f"{path}: the file name must be SYMBOL-TIMEFRAME.csv, e.g. ETHBTC-5m.csv"
                )
            try:
                tf = normalize_timeframe(tf)
            except ValueError:
                raise CandleFileError(
                    f"{path}: {tf!r} in the file name is not a Binance interval"
                ) from None
            if (symbol, tf) in frames:
                raise CandleFileError(f"{path}: a second file for {symbol} {tf}")
            frames[(symbol, tf)] = load_candles(path)
        return cls(frames)

    @property
    def symbols(self) -> list[str]:
        return sorted(self._files)

    def timeframes(self, symbol: str) -> list[str]:
        return sorted(self._files.get(symbol.upper(), {}), key=TIMEFRAMES.index)

    @property
    def first_open_ms(self) -> int:
        return min(
            int(frame["open_time"].iloc[0])
            for tfs in self._files.values()
            for frame in tfs.values()
        )

    @property
    def last_close_ms(self) -> int:
        return max(
            next_bar_open(int(frame["open_time"].iloc[-1]), tf)
            for tfs in self._files.values()
            for tf, frame in tfs.items()
        )

    def _guess_info(self, symbol: str) -> dict[str, Any]:
        frame = self._files[symbol][self.timeframes(symbol)[0]]
        return guessed_symbol_info(
            symbol, float(frame["low"].min()), float(frame["close"].median())
        )

    def exchange_info(
        self, now_ms: int, weight_limit: int = DEFAULT_WEIGHT_LIMIT
    ) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": int(now_ms),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            # Copies: a caller editing its answer must not change the next one.
            "symbols": [copy.deepcopy(self._symbol_info[symbol]) for symbol in self.symbols],
        }

    def _series(self, symbol: str, interval: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        """(timeframe of the file used, its candles, the candles of `interval`)."""
        files = self._files.get(symbol.upper())
        if files is None:
            raise UnknownSymbol(symbol)
        if interval not in TIMEFRAMES:
            raise UnknownInterval(interval)
        if interval in files:
            return interval, files[interval], files[interval]
        with self._lock:
            cached = self._resampled.get((symbol, interval))
            if cached is None:
                # The coarsest file that divides the interval: fewest rows to aggregate.
                usable = [tf for tf in self.timeframes(symbol) if _can_build(tf, interval)]
                if not usable:
                    raise UnknownInterval(
                        interval,
                        f"Invalid interval: {symbol} is replayed from {', '.join(files)} candles, "
                        f"which cannot make {interval} ones.",
                    )
                base_tf = usable[-1]
                built = _with_binance_precision(resample(files[base_tf], interval))
                cached = self._resampled[(symbol, interval)] = (base_tf, built)
        base_tf, built = cached
        return base_tf, files[base_tf], built

    def klines(
        self,
        symbol: str,
        interval: str,
        now_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = DEFAULT_KLINES_LIMIT,
    ) -> pd.DataFrame:
        """What Binance's /api/v3/klines would return at `now_ms`, as a candle frame.

        Selection follows Binance: with startTime the first `limit` candles
        opening at or after it; otherwise the last `limit` ones (up to endTime
        when given). Raises UnknownSymbol, UnknownInterval or InvalidMarketRequest.
        """
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise InvalidMarketRequest(-1130, "Invalid data sent for a parameter.")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise InvalidMarketRequest(-1023, "Start time is greater than end time.")
        symbol = symbol.upper()
        base_tf, base, candles = self._series(symbol, interval)
        opens = candles["open_time"].to_numpy(np.int64)
        count = int(np.searchsorted(opens, now_ms, side="right"))
        forming: dict[str, float] | None = None
        if count and next_bar_open(int(opens[count - 1]), interval) > now_ms:
            forming = self._forming_values(candles, base, base_tf, interval, count - 1, now_ms)
            if forming is None:
                # The coarse bar has begun but none of its base candles has
                # opened yet (a gap in the file): nothing to show for it.
                count -= 1
        first, last = 0, count
        if start_ms is not None:
            first = int(np.searchsorted(opens[:count], start_ms, side="left"))
        if end_ms is not None:
            last = int(np.searchsorted(opens[:count], end_ms, side="right"))
        if start_ms is not None:
            last = min(last, first + limit)
        else:
            first = max(first, last - limit)
        window = candles.iloc[first:last].reset_index(drop=True)
        if forming is None or last != count or last <= first:
            return window
        columns = {name: window[name].to_numpy(copy=True) for name in COLUMNS}
        for name, value in forming.items():
            columns[name][-1] = value
        return pd.DataFrame(columns)

    def _forming_values(
        self,
        candles: pd.DataFrame,
        base: pd.DataFrame,
        base_tf: str,
        interval: str,
        row: int,
        now_ms: int,
    ) -> dict[str, float] | None:
        bar_open = int(candles["open_time"].iloc[row])
        if base_tf == interval:
            candle = {name: float(candles[name].iloc[row]) for name in PRICE_COLUMNS}
            return forming_view(candle, bar_open, next_bar_open(bar_open, interval), now_ms)
        return self._forming_from_base(base, base_tf, bar_open, now_ms)

    def _forming_from_base(
        self, base: pd.DataFrame, base_tf: str, bar_open: int, now_ms: int
    ) -> dict[str, float] | None:
        opens = base["open_time"].to_numpy(np.int64)
        first = int(np.searchsorted(opens, bar_open, side="left"))
        stop = int(np.searchsorted(opens, now_ms, side="right"))
        if stop <= first:
            return None
        parts = {name: base[name].to_numpy(np.float64)[first:stop].copy() for name in PRICE_COLUMNS}
        last_open = int(opens[stop - 1])
        last_close = next_bar_open(last_open, base_tf)
        if last_close > now_ms:
            last_candle = {name: float(parts[name][-1]) for name in PRICE_COLUMNS}
            for name, value in forming_view(last_candle, last_open, last_close, now_ms).items():
                parts[name][-1] = value
        values = {
            "open": float(parts["open"][0]),
            "high": float(parts["high"].max()),
            "low": float(parts["low"].min()),
            "close": float(parts["close"][-1]),
            "volume": float(parts["volume"].sum()),
        }
        rounded = _at_binance_precision(np.array(list(values.values())))
        return dict(zip(values, rounded, strict=True))


def _page_size(limit: int) -> int:
    # Like BinanceSource: a caller's limit is clamped to what one request may ask.
    return max(1, min(int(limit), MAX_KLINES_LIMIT))


class ReplaySource(FiltersFromExchangeInfo):
    """Candle files behind a `Clock`, with the public methods of `BinanceSource`.

    For the demo and tests: the same selection and forming-candle rules as the
    stub, without HTTP in between.
    """

    def __init__(
        self,
        market: ReplayMarket | str | Path | Iterable[str | Path],
        clock: Clock | None = None,
        *,
        start: int | str | datetime | None = None,
        speed: float = 0.0,
    ) -> None:
        self.market = (
            market if isinstance(market, ReplayMarket) else ReplayMarket.from_paths(market)
        )
        if clock is None:
            start_ms = self.market.first_open_ms if start is None else as_epoch_ms(start)
            clock = Clock(start_ms, speed=speed)
        self.clock = clock

    def server_time_ms(self) -> int:
        return self.clock.now_ms()

    def exchange_info(self) -> dict[str, Any]:
        return self.market.exchange_info(self.clock.now_ms())

    def klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = MAX_KLINES_LIMIT,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        return self.market.klines(
            symbol.upper(),
            normalize_timeframe(timeframe),
            self.clock.now_ms(),
            start_ms=start_ms,
            end_ms=end_ms,
            limit=_page_size(limit),
        )

    def closed_klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = MAX_KLINES_LIMIT,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        timeframe = normalize_timeframe(timeframe)
        server_time = self.server_time_ms()
        candles = self.market.klines(
            symbol.upper(),
            timeframe,
            server_time,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=_page_size(limit),
        )
        return drop_forming(candles, timeframe, server_time)
