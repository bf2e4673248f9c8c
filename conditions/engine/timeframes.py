"""Binance timeframes: names, bar boundaries, resampling and alignment
(CONDITIONS.md section 5).

Times are epoch milliseconds UTC, as Binance sends them. A bar is identified by
its open time and closes when the next bar of its timeframe opens. Boundaries
are UTC: fixed intervals are aligned to the epoch (so 3d bars start every
third day counted from 1970-01-01, as Binance's do), weeks start on Monday
00:00 UTC, months on the first day of the calendar month.

A condition on another timeframe than its alert's base one may only see
candles of that timeframe that have closed at or before the close of the base
bar it is evaluated on; `align_to_base` is the one place that rule lives.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from conditions.engine.errors import ConditionError

TIMEFRAMES: tuple[str, ...] = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC after the epoch.
_FIRST_MONDAY_MS = 4 * DAY_MS

# Fixed durations; 1M is absent on purpose because months differ in length.
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}

_BY_MINUTES: dict[int, str] = {ms // MINUTE_MS: name for name, ms in TIMEFRAME_MS.items()}

# Unit spellings in minutes, matched case-insensitively. The bare letters "m"
# and "M" are handled before lower-casing: they are the one place where case
# changes meaning (minute vs month).
_UNIT_MINUTES: dict[str, int] = {
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 1),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 60),
    **dict.fromkeys(("d", "day", "days"), 24 * 60),
    **dict.fromkeys(("w", "wk", "week", "weeks"), 7 * 24 * 60),
}
_MONTH_UNITS = frozenset(("mo", "mon", "month", "months"))

_TIMEFRAME_PATTERN = re.compile(r"(\d{1,6})\s*([A-Za-z]+)")

CANDLE_COLUMNS: tuple[str, ...] = ("open_time", "open", "high", "low", "close", "volume")


def normalize_timeframe(value: object, field: str = "timeframe") -> str:
    """The Binance interval name for `value` ("60m" -> "1h", "1D" -> "1d", "7d" -> "1w").

    Raises ConditionError naming `field` for anything that is not one of the
    15 Binance intervals under some spelling.
    """
    if isinstance(value, str) and (value in TIMEFRAME_MS or value == "1M"):
        return value
    if not isinstance(value, str):
        raise ConditionError(field, f"must be a string like '1h', got {type(value).__name__}")
    match = _TIMEFRAME_PATTERN.fullmatch(value.strip())
    if match is not None:
        count = int(match.group(1))
        unit = match.group(2)
        if unit == "M" or unit.lower() in _MONTH_UNITS:
            if count == 1:
                return "1M"
        else:
            per_unit = 1 if unit == "m" else _UNIT_MINUTES.get(unit.lower())
            if per_unit is not None and count * per_unit in _BY_MINUTES:
                return _BY_MINUTES[count * per_unit]
    raise ConditionError(field, f"unknown timeframe {value!r} (one of {', '.join(TIMEFRAMES)})")


def timeframe_ms(tf: str) -> int:
    """The fixed length of a bar of `tf` in milliseconds; ValueError for 1M."""
    tf = normalize_timeframe(tf)
    if tf == "1M":
        raise ValueError("1M has no fixed duration: months follow the calendar")
    return TIMEFRAME_MS[tf]


def _as_ms(values: object) -> tuple[np.ndarray, bool]:
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"open times must be integer epoch milliseconds, got {array.dtype}")
    return array.astype(np.int64, copy=False), array.ndim == 0


def _month_floor(ms: np.ndarray) -> np.ndarray:
    months = ms.astype("datetime64[ms]").astype("datetime64[M]")
    return months.astype("datetime64[ms]").astype(np.int64)


def _floor(ms: np.ndarray, tf: str) -> np.ndarray:
    if tf == "1M":
        return _month_floor(ms)
    if tf == "1w":
        return ms - (ms - _FIRST_MONDAY_MS) % WEEK_MS
    return ms - ms % TIMEFRAME_MS[tf]


def _next_open(ms: np.ndarray, tf: str) -> np.ndarray:
    if tf == "1M":
        months = ms.astype("datetime64[ms]").astype("datetime64[M]") + 1
        return months.astype("datetime64[ms]").astype(np.int64)
    return _floor(ms, tf) + TIMEFRAME_MS[tf]


def bar_open_floor(ms: int | np.ndarray, tf: str) -> int | np.ndarray:
    """Open time of the `tf` bar containing `ms` (an int or an int64 array)."""
    tf = normalize_timeframe(tf)
    values, scalar = _as_ms(ms)
    floored = _floor(values, tf)
    return int(floored) if scalar else floored


def next_bar_open(open_ms: int | np.ndarray, tf: str) -> int | np.ndarray:
    """Open time of the `tf` bar after the one containing `open_ms`, which is
    also the close time of that bar."""
    tf = normalize_timeframe(tf)
    values, scalar = _as_ms(open_ms)
    following = _next_open(values, tf)
    return int(following) if scalar else following


def _empty_candles() -> pd.DataFrame:
    columns: dict[str, np.ndarray] = {"open_time": np.empty(0, dtype=np.int64)}
    for name in CANDLE_COLUMNS[1:]:
        columns[name] = np.empty(0, dtype=np.float64)
    return pd.DataFrame(columns)


def resample(candles: pd.DataFrame, target_tf: str) -> pd.DataFrame:
    """Candles of `target_tf` built from finer, ascending candles.

    Buckets are UTC bars of `target_tf`: open first, high max, low min, close
    last, volume sum. A bucket with no input candle gives no row, and the last
    row may be a bucket still forming when the input ends mid-bucket; use
    `align_to_base` to read only closed ones. Extra input columns are dropped.
    The target must be a multiple of the input timeframe; a finer target would
    relabel nothing and is not detected.
    """
    tf = normalize_timeframe(target_tf, field="target_tf")
    open_time = candles["open_time"].to_numpy()
    if open_time.dtype.kind not in "iu":
        raise TypeError(f"open_time must hold integer epoch milliseconds, got {open_time.dtype}")
    open_time = open_time.astype(np.int64, copy=False)
    count = len(open_time)
    if count == 0:
        return _empty_candles()
    if count > 1 and not bool(np.all(open_time[1:] > open_time[:-1])):
        raise ValueError("candles must be in strictly ascending open_time order")

    buckets = _floor(open_time, tf)
    # Input is sorted, so each bucket is one contiguous run of rows.
    starts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    ends = np.append(starts[1:], count) - 1

    high = candles["high"].to_numpy(np.float64)
    low = candles["low"].to_numpy(np.float64)
    volume = candles["volume"].to_numpy(np.float64)
    return pd.DataFrame(
        {
            "open_time": buckets[starts],
            "open": candles["open"].to_numpy(np.float64)[starts],
            "high": np.fmax.reduceat(high, starts),
            "low": np.fmin.reduceat(low, starts),
            "close": candles["close"].to_numpy(np.float64)[ends],
            "volume": np.add.reduceat(volume, starts),
        },
        copy=False,
    )


def align_to_base(
    base_open_ms: np.ndarray, base_tf: str, other_open_ms: np.ndarray, other_tf: str
) -> np.ndarray:
    """For each base bar, the index into `other_open_ms` of the most recent
    `other_tf` candle that has closed at or before the base bar closes; -1 when
    there is none.

    Both arrays are ascending open times. Works whether `other_tf` is coarser
    or finer than `base_tf`. A bucket that `resample` built from a partial
    input closes after the last base bar, so it is never returned.
    """
    base, _ = _as_ms(np.atleast_1d(base_open_ms))
    other, _ = _as_ms(np.atleast_1d(other_open_ms))
    base_close = _next_open(base, normalize_timeframe(base_tf, field="base_tf"))
    other_close = _next_open(other, normalize_timeframe(other_tf, field="other_tf"))
    return np.searchsorted(other_close, base_close, side="right").astype(np.int64) - 1
