"""Candles for generated symbols, made from the real klines in tests/data/klines.

Each (symbol, timeframe) series is a window of one of the real 5m kline files
(ADABTC, ETCBTC, ETHBTC, LTCBTC, NXTBTC, XLMBTC, in turn by symbol), starting
at an offset the seed chooses, with prices multiplied by a factor the seed
chooses (1, 2 or 5 times a power of ten, so symbols trade between about 0.01
and 50,000, as on an exchange) and rounded to Binance's 8 decimals, volume
divided by the same factor, and open times re-laid on the timeframe's grid.
Real candle shapes, then, with real volatility and gaps in trading, but not
resampled: a symbol's 1h series is not the aggregate of its 5m series, which
the engine never assumes.

Every series ends at the same moment, `CYCLE_CLOSE_MS`, which closes a bar
of every timeframe up to a day: the cycle in which every candle closes.
Cycle 0 is that one; cycle -1 the bar before, and so on: a benchmark warms
its workers on the cycle before the ones it measures.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from conditions.engine.candles import COLUMNS, load_candles
from conditions.engine.timeframes import timeframe_ms

KLINES_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "klines"
# 2024-01-01 00:00 UTC, a Monday: 5m, 1h, 4h and 1d bars all close here.
CYCLE_CLOSE_MS = 1_704_067_200_000
HISTORY_BARS = 1000
_FACTOR_MANTISSAS = (1, 2, 5)


@cache
def _source_files() -> tuple[tuple[str, pd.DataFrame], ...]:
    files = sorted(KLINES_DIR.glob("*-5m.csv"))
    if not files:
        raise FileNotFoundError(f"no *-5m.csv kline files in {KLINES_DIR}")
    return tuple((path.name.split("-")[0], load_candles(path)) for path in files)


def symbol_names(count: int) -> list[str]:
    """S000ADABTC, S001ETCBTC, ...: the source file shows in the name."""
    sources = _source_files()
    return [f"S{index:03d}{sources[index % len(sources)][0]}" for index in range(count)]


class GeneratedMarket:
    """`HISTORY_BARS` closed candles per symbol and timeframe at each cycle."""

    def __init__(
        self,
        *,
        symbols: int,
        timeframes: Sequence[str],
        seed: int,
        bars: int = HISTORY_BARS,
        earliest_cycle: int = -2,
    ) -> None:
        if symbols < 1 or bars < 2 or earliest_cycle > 0:
            raise ValueError("need at least one symbol, two bars, and cycles up to 0")
        self.symbols = symbol_names(symbols)
        self.timeframes = tuple(timeframes)
        self.bars = bars
        self.earliest_cycle = earliest_cycle
        rng = random.Random(seed)
        sources = _source_files()
        rows = bars - earliest_cycle
        # Cycles before -2 extend each window back in its file, the same
        # draw as without them: the same seed gives the same candles.
        extra = max(0, -2 - earliest_cycle)
        self._series: dict[tuple[str, str], np.ndarray] = {}
        self._frames: dict[tuple[str, str, int], pd.DataFrame] = {}
        self._open_times: dict[str, np.ndarray] = {}
        self.reference_prices: dict[str, float] = {}
        for tf in self.timeframes:
            step = timeframe_ms(tf)
            self._open_times[tf] = CYCLE_CLOSE_MS - step * np.arange(rows, 0, -1, dtype=np.int64)
        for index, symbol in enumerate(self.symbols):
            _, source = sources[index % len(sources)]
            if len(source) < rows:
                raise ValueError(f"the kline files hold fewer than {rows} candles")
            values = source[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
            target = 10 ** rng.uniform(-2, 4.7)
            factor = _round_factor(target / float(np.median(values[:, 3])))
            for tf in self.timeframes:
                start = max(0, rng.randrange(0, len(source) - rows + extra + 1) - extra)
                window = values[start : start + rows].copy()
                window[:, :4] = np.round(window[:, :4] * factor, 8)
                window[:, 4] = np.round(window[:, 4] / factor, 8)
                self._series[(symbol, tf)] = window
            last_close = self._series[(symbol, self.timeframes[0])][-1, 3]
            self.reference_prices[symbol] = float(last_close)

    def candles(self, symbol: str, timeframe: str, cycle: int = 0) -> pd.DataFrame:
        """The `bars` candles closed when cycle `cycle` closes, oldest first:
        a frame kept in memory, as a worker's market data or a bot's are
        (treat it as read-only)."""
        if not self.earliest_cycle <= cycle <= 0:
            raise ValueError(f"cycle must be between {self.earliest_cycle} and 0")
        key = (symbol, timeframe, cycle)
        frame = self._frames.get(key)
        if frame is None:
            stop = len(self._open_times[timeframe]) + cycle
            start = stop - self.bars
            values = self._series[(symbol, timeframe)][start:stop]
            columns = {"open_time": self._open_times[timeframe][start:stop]}
            columns.update((name, values[:, i]) for i, name in enumerate(COLUMNS[1:]))
            frame = self._frames[key] = pd.DataFrame(columns, copy=True)
        return frame

    def series(self, symbol: str, timeframe: str) -> pd.DataFrame:
        """Every candle of the series, up to the close of cycle 0."""
        columns = {"open_time": self._open_times[timeframe]}
        values = self._series[(symbol, timeframe)]
        columns.update((name, values[:, i]) for i, name in enumerate(COLUMNS[1:]))
        return pd.DataFrame(columns, copy=True)


def _round_factor(raw: float) -> float:
    """The nearest of 1, 2 or 5 times a power of ten (at or below `raw`)."""
    exponent = int(np.floor(np.log10(raw)))
    mantissa = max(m for m in _FACTOR_MANTISSAS if m <= raw / 10**exponent)
    return mantissa * 10.0**exponent
