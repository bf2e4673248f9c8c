"""Indicator values for the condition engine (CONDITIONS.md section 3).

Every value follows TA-Lib's definition of the indicator, which is also
TradingView's, and never depends on whether TA-Lib is importable: pandas-ta
is only ever called with ``talib=False``.

pandas-ta's sma computes the SMA indicator, the BBANDS middle band and the
STOCH smoothing: there its result is the reference. Where pandas-ta 0.4.71b0
departs from the reference, or costs too much per call for the evaluation
loop, the indicator is assembled here from numpy and a few compiled loops:

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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import pandas_ta as ta
from numba import njit

from conditions.engine.catalog import INDICATORS, SOURCES

# TA-Lib treats a difference within this fraction of the magnitudes it was
# taken from as zero (its TA_IS_ZERO_SCALED): prices that are equal on paper
# can differ in their last bits once (high + low + close) / 3 is rounded.
RELATIVE_ZERO = 1e-14

Outputs = dict[str, np.ndarray]


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
    indicator = INDICATORS.get(name)
    if indicator is None:
        raise ValueError(f"unknown indicator {name!r}")
    resolved = _resolved_params(name, params)
    bar_count = len(candles)
    warmup = _WARMUPS[name](**resolved)
    if bar_count <= warmup:
        return {output: np.full(bar_count, np.nan) for output in indicator.outputs}
    outputs = _COMPUTATIONS[name](candles, **resolved)
    for values in outputs.values():
        # The reference has no value there even where one can be computed
        # (the MACD line before its signal exists, %K before %D exists).
        values[:warmup] = np.nan
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


def _simple_average(values: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        # pandas-ta's sma returns an empty array for length 1 and then fails.
        return values.astype(np.float64, copy=True)
    average = ta.sma(pd.Series(values), length=length, talib=False)
    # pandas-ta returns None instead of a Series when the input is too short.
    if average is None:
        return np.full(values.size, np.nan)
    return average.to_numpy(dtype=np.float64, copy=True)


def _exponential_average(values: np.ndarray, length: int) -> np.ndarray:
    """EMA seeded, as in TA-Lib, with the average of the first ``length`` values."""
    return _seeded_recursion(np.ascontiguousarray(values), length, False)


def _wilder_average(values: np.ndarray, length: int, seed_at: int) -> np.ndarray:
    """Wilder's smoothing whose first value, at ``seed_at``, is the simple
    average of the ``length`` values ending there (TA-Lib's seeding)."""
    smoothed = np.full(values.size, np.nan)
    start = seed_at - length + 1
    smoothed[start:] = _seeded_recursion(np.ascontiguousarray(values[start:]), length, True)
    return smoothed


def _ratio(numerator: np.ndarray, denominator: np.ndarray, defined: np.ndarray) -> np.ndarray:
    result = np.full(numerator.size, np.nan)
    np.divide(numerator, denominator, out=result, where=defined)
    return result


def _share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    """100 * part / total, and 0 where total is 0: TA-Lib's answer to an
    oscillator's 0/0 (no movement, no money flow over the window)."""
    has_total = total > 0
    share = np.where(has_total, 100.0 * _ratio(part, total, has_total), 0.0)
    share[np.isnan(total)] = np.nan
    return share


# Compiled loops: each value depends on the previous one, or on a window that
# numpy could only materialize as a (bars x length) temporary. pandas' ewm and
# rolling do the same work behind ~10-20x more per-call overhead.


@njit(cache=True)
def _seeded_recursion(values: np.ndarray, length: int, wilder: bool) -> np.ndarray:
    # TA-Lib's own update formulas, so results agree to the last bits.
    result = np.full(values.size, np.nan)
    if values.size < length:
        return result
    total = 0.0
    for i in range(length):
        total += values[i]
    previous = total / length
    result[length - 1] = previous
    factor = 2.0 / (length + 1)
    for i in range(length, values.size):
        if wilder:
            previous = (previous * (length - 1) + values[i]) / length
        else:
            previous = (values[i] - previous) * factor + previous
        result[i] = previous
    return result


@njit(cache=True)
def _window_sums(values: np.ndarray, length: int) -> np.ndarray:
    # Each window summed afresh rather than as a running total, so a window
    # of zeros sums to exactly zero: the zero-flow rule of MFI relies on it.
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        total = 0.0
        for i in range(end - length + 1, end + 1):
            total += values[i]
        result[end] = total
    return result


@njit(cache=True)
def _window_deviation_sums(
    values: np.ndarray, centers: np.ndarray, length: int, squared: bool
) -> np.ndarray:
    # Sum of |value - center| (or its square) over each window, around the
    # center of the window ending at the same bar.
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        center = centers[end]
        total = 0.0
        for i in range(end - length + 1, end + 1):
            deviation = values[i] - center
            total += deviation * deviation if squared else abs(deviation)
        result[end] = total
    return result


@njit(cache=True)
def _window_extremes(values: np.ndarray, length: int, highest: bool) -> np.ndarray:
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        extreme = values[end]
        for i in range(end - length + 1, end):
            if (values[i] > extreme) if highest else (values[i] < extreme):
                extreme = values[i]
        result[end] = extreme
    return result


# --- indicators --------------------------------------------------------------


def _rsi(candles: pd.DataFrame, length: int) -> Outputs:
    close = _column(candles, "close")
    change = np.diff(close, prepend=np.nan)
    gains = np.where(change > 0, change, 0.0)
    losses = np.where(change < 0, -change, 0.0)
    average_gain = _wilder_average(gains, length, seed_at=length)
    average_loss = _wilder_average(losses, length, seed_at=length)
    return {"value": _share(average_gain, average_gain + average_loss)}


def _sma(candles: pd.DataFrame, length: int, source: str) -> Outputs:
    return {"value": _simple_average(_column(candles, source), length)}


def _ema(candles: pd.DataFrame, length: int, source: str) -> Outputs:
    return {"value": _exponential_average(_column(candles, source), length)}


def _macd(candles: pd.DataFrame, fast: int, slow: int, signal: int) -> Outputs:
    fast, slow = min(fast, slow), max(fast, slow)  # TA-Lib swaps them too
    close = _column(candles, "close")
    slow_ema = _exponential_average(close, slow)
    fast_ema = np.full(close.size, np.nan)
    # Starting the fast EMA slow - fast bars in puts its seed, the average of
    # the fast closes ending at bar slow - 1, where TA-Lib puts it.
    fast_ema[slow - fast :] = _exponential_average(close[slow - fast :], fast)
    line = fast_ema - slow_ema
    signal_line = np.full(close.size, np.nan)
    signal_line[slow - 1 :] = _exponential_average(line[slow - 1 :], signal)
    return {"macd": line, "signal": signal_line, "histogram": line - signal_line}


def _bbands(candles: pd.DataFrame, length: int, std: float) -> Outputs:
    close = _column(candles, "close")
    middle = _simple_average(close, length)
    deviation = np.sqrt(_window_deviation_sums(close, middle, length, True) / length)
    # A flat window leaves rounding residue, not a deviation: TA-Lib says 0.
    deviation[deviation <= RELATIVE_ZERO * np.abs(middle)] = 0.0
    lower = middle - std * deviation
    upper = middle + std * deviation
    width = upper - lower
    return {
        "lower": lower,
        "middle": middle,
        "upper": upper,
        "bandwidth": 100.0 * _ratio(width, middle, middle != 0),
        "percent_b": _ratio(close - lower, width, width > 0),
    }


def _stoch(candles: pd.DataFrame, k: int, d: int, smooth_k: int) -> Outputs:
    high, low, close = (_column(candles, column) for column in ("high", "low", "close"))
    lowest = _window_extremes(low, k, False)
    price_range = _window_extremes(high, k, True) - lowest
    # A window without range puts the close nowhere in it: TA-Lib says 0.
    has_range = price_range > 0
    fast_k = np.where(has_range, _ratio(close - lowest, price_range / 100.0, has_range), 0.0)
    slow_k = np.full(close.size, np.nan)
    slow_k[k - 1 :] = _simple_average(fast_k[k - 1 :], smooth_k)
    first_k = k + smooth_k - 2
    slow_d = np.full(close.size, np.nan)
    slow_d[first_k:] = _simple_average(slow_k[first_k:], d)
    return {"k": slow_k, "d": slow_d}


def _atr(candles: pd.DataFrame, length: int) -> Outputs:
    high, low, close = (_column(candles, column) for column in ("high", "low", "close"))
    previous_close = close[:-1]
    true_range = np.full(close.size, np.nan)
    true_range[1:] = np.maximum(high[1:], previous_close) - np.minimum(low[1:], previous_close)
    return {"value": _wilder_average(true_range, length, seed_at=length)}


def _typical_price(candles: pd.DataFrame) -> np.ndarray:
    return (_column(candles, "high") + _column(candles, "low") + _column(candles, "close")) / 3.0


def _mfi(candles: pd.DataFrame, length: int) -> Outputs:
    typical = _typical_price(candles)
    change = np.diff(typical)
    moved = np.abs(change) > RELATIVE_ZERO * (np.abs(typical[1:]) + np.abs(typical[:-1]))
    flow = typical[1:] * _column(candles, "volume")[1:]
    positive = np.zeros(typical.size)
    negative = np.zeros(typical.size)
    positive[1:] = np.where(moved & (change > 0), flow, 0.0)
    negative[1:] = np.where(moved & (change < 0), flow, 0.0)
    positive_sum = _window_sums(positive, length)
    return {"value": _share(positive_sum, positive_sum + _window_sums(negative, length))}


def _cci(candles: pd.DataFrame, length: int) -> Outputs:
    typical = _typical_price(candles)
    mean = _window_sums(typical, length) / length
    mean_deviation = _window_deviation_sums(typical, mean, length, False) / length
    deviation = typical - mean
    # On a flat window both are rounding residue; TA-Lib reports 0 there.
    level = RELATIVE_ZERO * np.abs(mean)
    meaningful = (np.abs(deviation) > level) & (mean_deviation > level)
    cci = np.where(meaningful, _ratio(deviation, 0.015 * mean_deviation, meaningful), 0.0)
    cci[np.isnan(mean)] = np.nan
    return {"value": cci}


def _volume(candles: pd.DataFrame) -> Outputs:
    return {"value": _column(candles, "volume").copy()}


_COMPUTATIONS: dict[str, Callable[..., Outputs]] = {
    "RSI": _rsi,
    "SMA": _sma,
    "EMA": _ema,
    "MACD": _macd,
    "BBANDS": _bbands,
    "STOCH": _stoch,
    "ATR": _atr,
    "MFI": _mfi,
    "CCI": _cci,
    "VOLUME": _volume,
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
