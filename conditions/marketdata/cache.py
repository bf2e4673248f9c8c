"""Closed candles shared by every worker, fetched from the source only once.

One cache entry per (symbol, timeframe) holds the last `capacity` closed
candles as two packed numpy buffers (int64 open times, float64 OHLCV), about
48 bytes a candle, plus two bounds:

- `covered_from`: no candle between it and the first row is missing from the
  entry (the source simply had none);
- `complete_until`: every candle opening before it that the source will ever
  have is in the entry (they had all closed by the source's clock).

A call for the candles closed at `now_ms` fetches nothing while
`now_ms`'s bar opens at or before `complete_until`, so the beat's many
evaluations of one bar cost one fetch; after a bar closes it fetches from the
last cached open time on, which is normally that one candle. The store is a
Django cache: Redis in production, shared by all workers; the file cache in
the embedded setup. Two workers racing write the same candles; the slower one
can at worst set an entry one bar back, which costs one extra fetch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from conditions.engine.candles import PRICE_COLUMNS
from conditions.engine.indicators import candle_arrays
from conditions.engine.timeframes import (
    bar_open_floor,
    next_bar_open,
    normalize_timeframe,
    timeframe_ms,
)
from conditions.marketdata.base import SERVER_TIME_ATTR, MarketDataSource

logger = logging.getLogger(__name__)

PAGE_LIMIT = 1000
ENTRY_FORMAT = 1
_MONTH_MS_AT_MOST = 31 * 24 * 3600 * 1000


@dataclass
class _Entry:
    open_time: np.ndarray
    values: np.ndarray
    covered_from: int
    complete_until: int
    capacity: int

    def packed(self) -> dict:
        return {
            "format": ENTRY_FORMAT,
            "open_time": self.open_time.tobytes(),
            "values": self.values.tobytes(),
            "covered_from": self.covered_from,
            "complete_until": self.complete_until,
            "capacity": self.capacity,
        }

    @classmethod
    def unpacked(cls, stored: object) -> _Entry | None:
        if not isinstance(stored, dict) or stored.get("format") != ENTRY_FORMAT:
            return None
        open_time = np.frombuffer(stored["open_time"], dtype=np.int64)
        values = np.frombuffer(stored["values"], dtype=np.float64).reshape(
            len(open_time), len(PRICE_COLUMNS)
        )
        return cls(
            open_time, values, stored["covered_from"], stored["complete_until"], stored["capacity"]
        )

    def frame(self, before_ms: int, history: int) -> pd.DataFrame:
        """A copy: callers may change it, and the buffers may be the store's."""
        stop = int(np.searchsorted(self.open_time, before_ms, side="left"))
        start = max(0, stop - history)
        columns = {"open_time": self.open_time[start:stop]}
        for index, name in enumerate(PRICE_COLUMNS):
            columns[name] = self.values[start:stop, index]
        return pd.DataFrame(columns, copy=True)


def _bars_before(open_ms: int, timeframe: str, count: int) -> int:
    """Open time of the bar `count` bars before the one opening at `open_ms`."""
    if timeframe != "1M":
        return open_ms - count * timeframe_ms(timeframe)
    for _ in range(count):
        open_ms = bar_open_floor(open_ms - 1, timeframe)
    return open_ms


class KlineCache:
    """Closed candles per symbol and timeframe, in a Django cache shared by workers."""

    def __init__(
        self,
        source: MarketDataSource,
        store: BaseCache | None = None,
        *,
        key_prefix: str = "marketdata:klines",
        forming_ttl_s: float = 0.5,
        entry_timeout_s: int = 7 * 24 * 3600,
    ) -> None:
        self.source = source
        self.store = store if store is not None else caches["default"]
        self.key_prefix = key_prefix
        self.forming_ttl_s = forming_ttl_s
        self.entry_timeout_s = entry_timeout_s
        self._forming: dict[tuple[str, str], tuple[float, pd.DataFrame | None]] = {}

    def _key(self, symbol: str, timeframe: str) -> str:
        return f"{self.key_prefix}:{symbol}:{timeframe}"

    def closed_candles(
        self, symbol: str, timeframe: str, now_ms: int, history: int = 1000
    ) -> pd.DataFrame:
        """The last `history` candles that had closed at `now_ms`, oldest first."""
        if history < 1:
            raise ValueError("history must be at least 1")
        symbol = symbol.upper()
        timeframe = normalize_timeframe(timeframe)
        forming_open = bar_open_floor(int(now_ms), timeframe)
        start_needed = _bars_before(forming_open, timeframe, history)
        key = self._key(symbol, timeframe)
        entry = _Entry.unpacked(self.store.get(key))

        if entry is None or self._needs_full_fetch(
            entry, timeframe, history, start_needed, forming_open
        ):
            capacity = max(history, entry.capacity if entry is not None else 0)
            entry = self._fetch_full(symbol, timeframe, forming_open, capacity)
            self.store.set(key, entry.packed(), timeout=self.entry_timeout_s)
        elif forming_open > entry.complete_until:
            newer = self._fetch_newer(symbol, timeframe, forming_open, entry)
            if newer is not entry:
                self.store.set(key, newer.packed(), timeout=self.entry_timeout_s)
            entry = newer
        return entry.frame(forming_open, history)

    def forget(self, symbol: str, timeframe: str) -> None:
        self.store.delete(self._key(symbol.upper(), normalize_timeframe(timeframe)))

    def forming_candle(self, symbol: str, timeframe: str) -> pd.DataFrame | None:
        """The candle still forming by the source's clock (one row), or None.

        For per_bar alerts. It changes with every trade, so it is not shared
        between workers, only kept here for `forming_ttl_s` so that the
        evaluations of one tick ask once.
        """
        symbol = symbol.upper()
        timeframe = normalize_timeframe(timeframe)
        remembered = self._forming.get((symbol, timeframe))
        if remembered is not None and time.monotonic() - remembered[0] < self.forming_ttl_s:
            return remembered[1]
        server_time = self.source.server_time_ms()
        latest = self.source.klines(symbol, timeframe, limit=1)
        forming: pd.DataFrame | None = None
        if (
            len(latest)
            and next_bar_open(int(latest["open_time"].iloc[-1]), timeframe) > server_time
        ):
            forming = latest.tail(1).reset_index(drop=True)
        self._forming[(symbol, timeframe)] = (time.monotonic(), forming)
        return forming

    # --- fetching -------------------------------------------------------------
    def _needs_full_fetch(
        self, entry: _Entry, timeframe: str, history: int, start_needed: int, forming_open: int
    ) -> bool:
        if history > entry.capacity or start_needed < entry.covered_from:
            return True
        # After a long pause paging through the gap costs more than starting over.
        if forming_open > entry.complete_until:
            bar_ms = _MONTH_MS_AT_MOST if timeframe == "1M" else timeframe_ms(timeframe)
            return (forming_open - entry.complete_until) // bar_ms > entry.capacity
        return False

    def _fetch_full(self, symbol: str, timeframe: str, forming_open: int, capacity: int) -> _Entry:
        start = _bars_before(forming_open, timeframe, capacity)
        logger.info("kline cache: loading %d %s %s candles", capacity, symbol, timeframe)
        opens, values, complete_until = self._fetch_pages(symbol, timeframe, start, forming_open)
        return self._trimmed(_Entry(opens, values, start, complete_until, capacity))

    def _fetch_newer(self, symbol: str, timeframe: str, forming_open: int, entry: _Entry) -> _Entry:
        """`entry` itself when the source had nothing it lacks, so that it is not stored again."""
        start = int(entry.open_time[-1]) + 1 if len(entry.open_time) else entry.covered_from
        opens, values, complete_until = self._fetch_pages(symbol, timeframe, start, forming_open)
        if len(entry.open_time):
            keep = opens > entry.open_time[-1]
            opens, values = opens[keep], values[keep]
        if not len(opens) and complete_until <= entry.complete_until:
            return entry
        merged = _Entry(
            np.concatenate([entry.open_time, opens]),
            np.concatenate([entry.values, values]),
            entry.covered_from,
            max(entry.complete_until, complete_until),
            entry.capacity,
        )
        return self._trimmed(merged)

    def _fetch_pages(
        self, symbol: str, timeframe: str, start_ms: int, forming_open: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Open times and OHLCV of the closed candles from `start_ms` up to the bar
        opening at `forming_open`, and the open time before which that is complete."""
        opens = [np.empty(0, np.int64)]
        values = [np.empty((0, len(PRICE_COLUMNS)), np.float64)]
        server_time = forming_open
        while True:
            # endTime stops Binance from also sending the candle still forming at now_ms.
            page = self.source.closed_klines(
                symbol, timeframe, start_ms=start_ms, limit=PAGE_LIMIT, end_ms=forming_open - 1
            )
            server_time = int(page.attrs.get(SERVER_TIME_ATTR, server_time))
            if len(page):
                page_opens, page_prices = candle_arrays(page)
                opens.append(page_opens)
                values.append(page_prices.T)
            if len(page) < PAGE_LIMIT:
                break
            start_ms = int(page["open_time"].iloc[-1]) + 1
        # A source behind the caller's clock vouches only for what had closed on its own.
        complete_until = min(forming_open, bar_open_floor(server_time, timeframe))
        return np.concatenate(opens), np.concatenate(values), complete_until

    @staticmethod
    def _trimmed(entry: _Entry) -> _Entry:
        excess = len(entry.open_time) - entry.capacity
        if excess <= 0:
            return entry
        return _Entry(
            entry.open_time[excess:],
            entry.values[excess:],
            int(entry.open_time[excess]),
            entry.complete_until,
            entry.capacity,
        )
