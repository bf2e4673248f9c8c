"""Indicator values for the condition engine (CONDITIONS.md section 3).

Every value follows TA-Lib's definition of the indicator, which is also
TradingView's, and never depends on whether TA-Lib is importable: pandas-ta
is only ever called with ``talib=False``.

pandas-ta's sma computes the SMA indicator, the BBANDS middle band and the
STOCH smoothing: there its result is the reference, reproduced here bit for
bit without pandas-ta's ~0.5 ms of validation per call (its compiled
``nb_sma`` as numba builds it without SciPy: each window's dot product
summed in order; a test compares the two on every length). Where pandas-ta
0.4.71b0 departs from the reference, or costs too much per call for the
evaluation loop, the indicator is computed by a compiled loop of its own
(conditions.engine.indicator_loops), one call per indicator:

- RSI and ATR: Wilder smoothing seeded with the simple average of the first
  ``length`` changes (true ranges), the first value at bar ``length``;
  pandas-ta smooths from the first bar, and its ATR seed is one bar early.
- EMA and MACD: EMA seeded with the average of its first ``length`` values
  (pandas-ta's ``presma`` does this too, at ~15x the cost). TA-Lib seeds
  MACD's fast EMA at the bar where the slow one starts, with the average of
  the ``fast`` closes ending there; pandas-ta seeds it on the first ``fast``
  closes, which shifts every later value.
- BBANDS: population standard deviation (ddof=0), two passes per window;
  pandas' rolling variance, under pandas-ta's stdev, drifts ~1e-8 relative.
- STOCH: a range of zero gives %K 0 (pandas-ta adds an epsilon to every range
  as soon as one is zero), and k + smooth_k + d - 2 bars already give a
  value (pandas-ta returns None below k + smooth_k + d).
- MFI: an unchanged typical price is neither positive nor negative flow;
  pandas-ta counts it as negative, wraps the first bar around to the last
  and adds an epsilon to the denominator.
- CCI: (TP - SMA(TP)) / (0.015 * mean absolute deviation); pandas-ta drops
  the parentheses.

Missing values are NaN, exactly where TA-Lib has none: a value that depends
on fewer bars than the indicator needs is missing (see ``warmup_bars``).

The live evaluation needs only the last few values of each indicator.
``indicator_tail`` gives them, equal bit for bit to the last values of the
full computation: the recursive indicators (RSI, EMA, MACD, ATR, whose seed
sits at the start of the candles) are computed over every candle; the others
depend only on their last ``warmup_bars + 1`` candles, each value computed
from its own window alone, so they are computed over the candles the tail
reads and no more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from conditions.engine import indicator_loops as loops
from conditions.engine.catalog import INDICATORS, SOURCES

Outputs = dict[str, np.ndarray]
Columns = Mapping[str, np.ndarray]
_FRAME_COLUMNS = ["open_time", *SOURCES]


def compute_indicator(candles: pd.DataFrame, name: str, params: Mapping[str, Any]) -> Outputs:
    """Every output of indicator ``name`` over ``candles``.

    ``candles`` has the columns open_time, open, high, low, close, volume in
    ascending time order; it may be shorter than the warm-up, or empty.
    ``name`` is a canonical catalog name and ``params`` its canonical params
    (a missing key takes the catalog default; an unknown key is an error).
    Returns one new float64 array of ``len(candles)`` per catalog output, NaN
    where the value is missing.

    BBANDS has two outputs TA-Lib lacks, defined as pandas-ta defines them
    (without its epsilon): ``bandwidth = (upper - lower) / middle * 100`` and
    ``percent_b = (close - lower) / (upper - lower)``. percent_b is missing
    where the bands have collapsed (upper == lower: the window is flat), and
    bandwidth where middle is 0.

    Lengths TA-Lib refuses (1 for RSI, MACD fast/slow, BBANDS, MFI, CCI)
    follow the same formulas: RSI(1) is 100 on a rise and 0 otherwise,
    BBANDS(1) collapses onto the close, CCI(1) is 0, MFI(1) is 100 on a rise
    of the typical price and 0 otherwise.
    """
    if name not in INDICATORS:
        raise ValueError(f"unknown indicator {name!r}")
    return IndicatorSpec.of(name, params).computed(candle_prices(candles))


def candle_columns(candles: pd.DataFrame) -> Columns:
    """The price and volume columns of a candle frame as contiguous float64
    arrays, the form ``indicator_tail`` takes: read once per frame."""
    return dict(zip(SOURCES, candle_prices(candles), strict=True))


def candle_arrays(candles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(open_time as int64, candle_prices): a frame's every column in one
    conversion where it can, a column read costing what the whole frame does.
    Epoch milliseconds are far below 2**53, so they survive float64 intact."""
    if list(candles.columns) == _FRAME_COLUMNS:
        table = candles.to_numpy(dtype=np.float64).T
        return table[0].astype(np.int64), np.ascontiguousarray(table[1:])
    return candles["open_time"].to_numpy(dtype=np.int64), candle_prices(candles)


def candle_prices(candles: pd.DataFrame) -> np.ndarray:
    """The price and volume columns of a candle frame as the rows of one
    float64 table, in the order of SOURCES."""
    if list(candles.columns) == _FRAME_COLUMNS:
        # One conversion of the whole frame costs what one column read does.
        return np.ascontiguousarray(candles.to_numpy(dtype=np.float64).T[1:])
    return np.array([_column(candles, name) for name in SOURCES])


def indicator_tail(columns: Columns, name: str, params: Mapping[str, Any], bars: int) -> Outputs:
    """The last ``bars`` values of every output of indicator ``name`` over
    ``columns`` (all of them when there are fewer), equal bit for bit to the
    last values of ``compute_indicator`` over the same candles."""
    return IndicatorSpec.of(name, params).tail(columns, bars)


@dataclass(frozen=True)
class IndicatorSpec:
    """An indicator with its parameters checked and defaults filled, once."""

    name: str
    params: Mapping[str, Any]
    warmup: int

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any]) -> IndicatorSpec:
        if name not in INDICATORS:
            raise ValueError(f"unknown indicator {name!r}")
        resolved = _resolved_params(name, params)
        return cls(name, resolved, _WARMUPS[name](**resolved))

    @property
    def kind(self) -> int:
        """Its kind for the compiled loops (`indicator_loops.indicator_outputs`)."""
        return _KINDS[self.name]

    @property
    def recursive(self) -> bool:
        """Whether every value depends on the first candles given."""
        return self.kind in loops.RECURSIVE

    def numbers(self) -> tuple[np.ndarray, float]:
        """Its parameters as the compiled loops take them: the whole numbers
        in the catalog's order (a source as its row in SOURCES), and std."""
        whole = [
            SOURCES.index(value) if isinstance(value, str) else value
            for key, value in self.params.items()
            if key != "std"
        ]
        return np.array([*whole, 0, 0, 0][:3], dtype=np.int64), float(self.params.get("std", 0.0))

    def tail(self, columns: Columns, bars: int) -> Outputs:
        """See ``indicator_tail``."""
        bar_count = len(columns["close"])
        bars = max(0, min(bars, bar_count))
        start = 0
        if not self.recursive:
            # One candle more than the window reads: pandas-ta's convolution
            # takes another summation order for a series exactly one window long.
            start = max(0, bar_count - bars - self.warmup - 1)
        outputs = self.computed(np.array([columns[source][start:] for source in SOURCES]))
        return {output: values[len(values) - bars :] for output, values in outputs.items()}

    def computed(self, prices: np.ndarray) -> Outputs:
        """Every output over `prices` (the rows of `candle_prices`)."""
        bar_count = prices.shape[1]
        names = INDICATORS[self.name].outputs
        if bar_count <= self.warmup:
            return {output: np.full(bar_count, np.nan) for output in names}
        whole, std = self.numbers()
        values = loops.indicator_outputs(self.kind, prices, whole, std)
        outputs = {}
        for row, output in enumerate(names):
            outputs[output] = values[row].copy()
            # The reference has no value there even where one can be computed
            # (the MACD line before its signal exists, %K before %D exists).
            outputs[output][: self.warmup] = np.nan
        return outputs


def warmup_bars(name: str, params: Mapping[str, Any]) -> int:
    """How many leading bars have no value: the index of the first value.

    This is TA-Lib's lookback for the indicator.
    """
    if name not in INDICATORS:
        raise ValueError(f"unknown indicator {name!r}")
    return _WARMUPS[name](**_resolved_params(name, params))


def _resolved_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    specs = INDICATORS[name].params
    unknown = set(params) - set(specs)
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(sorted(unknown))}")
    resolved: dict[str, Any] = {}
    for key, spec in specs.items():
        raw = params.get(key, spec.default)
        if spec.kind == "source":
            if raw not in SOURCES:
                raise ValueError(f"{name} {key} must be one of {', '.join(SOURCES)}, not {raw!r}")
            resolved[key] = raw
            continue
        if isinstance(raw, bool) or not isinstance(raw, Real) or not math.isfinite(raw):
            raise ValueError(f"{name} {key} must be a number, not {raw!r}")
        if spec.kind == "float":
            if not raw > 0:
                raise ValueError(f"{name} {key} must be positive, not {raw!r}")
            resolved[key] = float(raw)
        else:
            if raw != int(raw):
                raise ValueError(f"{name} {key} must be a whole number, not {raw!r}")
            if raw < 1:
                raise ValueError(f"{name} {key} must be at least 1, not {raw!r}")
            resolved[key] = int(raw)
    return resolved


# --- building blocks ---------------------------------------------------------


def _column(candles: pd.DataFrame, name: str) -> np.ndarray:
    return np.ascontiguousarray(candles[name].to_numpy(dtype=np.float64))


_KINDS = {
    "RSI": loops.RSI,
    "SMA": loops.SMA,
    "EMA": loops.EMA,
    "MACD": loops.MACD,
    "BBANDS": loops.BBANDS,
    "STOCH": loops.STOCH,
    "ATR": loops.ATR,
    "MFI": loops.MFI,
    "CCI": loops.CCI,
    "VOLUME": loops.VOLUME,
}

# TA-Lib's lookback of each indicator, in the catalog's parameter names.
_WARMUPS: dict[str, Callable[..., int]] = {
    "RSI": lambda length: length,
    "SMA": lambda length, source: length - 1,
    "EMA": lambda length, source: length - 1,
    "MACD": lambda fast, slow, signal: max(fast, slow) - 1 + signal - 1,
    "BBANDS": lambda length, std: length - 1,
    "STOCH": lambda k, d, smooth_k: (k - 1) + (smooth_k - 1) + (d - 1),
    "ATR": lambda length: length,
    "MFI": lambda length: length,
    "CCI": lambda length: length - 1,
    "VOLUME": lambda: 0,
}
