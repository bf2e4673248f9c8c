"""Backtest an alert over historical candles (CONDITIONS.md section 8).

The same plan and playbook code the workers run, over every bar at once:
no operator or indicator reads a later bar, so evaluating the whole history
in one pass gives, at each bar, what a bar-by-bar run would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from .errors import ConditionError
from .plan import EvaluationPlan, PlanResult
from .playbook import NormalizedAlert, alert_signal, fire_bars, normalize_alert
from .timeframes import TIMEFRAMES, next_bar_open, resample, timeframe_ms


@dataclass(frozen=True)
class CandleSet:
    symbol: str
    timeframe: str
    candles: pd.DataFrame


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(tf: str) -> int:
    return 30 * 86_400_000 if tf == "1M" else timeframe_ms(tf)


def candles_by_timeframe(sets: list[CandleSet], alert: NormalizedAlert) -> dict[str, pd.DataFrame]:
    """The candles the plan needs, keyed by timeframe; the base timeframe is
    resampled from the finest finer file when no file has it."""
    frames: dict[str, pd.DataFrame] = {}
    for candle_set in sets:
        if candle_set.symbol != alert.symbol:
            raise ConditionError(
                "symbol", f"the alert is for {alert.symbol} but the candles are {candle_set.symbol}"
            )
        if candle_set.timeframe in frames:
            raise ConditionError(
                "candles", f"two candle files for timeframe {candle_set.timeframe}"
            )
        frames[candle_set.timeframe] = candle_set.candles
    needed = {alert.base_timeframe} | {step.canonical["timeframe"] for step in alert.steps}
    for timeframe in sorted(needed, key=TIMEFRAMES.index):
        if timeframe in frames:
            continue
        finer = [
            tf
            for tf in frames
            if _duration(tf) < _duration(timeframe) and _duration(timeframe) % _duration(tf) == 0
        ]
        if finer:
            finest = min(finer, key=_duration)
            frames[timeframe] = _closed_buckets(frames[finest], finest, timeframe)
        elif (
            _duration(timeframe) < _duration(alert.base_timeframe)
            or timeframe == alert.base_timeframe
        ):
            raise ConditionError(
                "candles",
                f"no candles for timeframe {timeframe} (and none finer to build them from)",
            )
    return frames


def _closed_buckets(source: pd.DataFrame, source_tf: str, timeframe: str) -> pd.DataFrame:
    """`source` resampled to `timeframe`, without a last bucket that has not
    closed when the source ends: as a base bar it would be evaluated as
    closed while it is still forming."""
    buckets = resample(source, timeframe)
    source_end = next_bar_open(int(source["open_time"].iloc[-1]), source_tf)
    closed = next_bar_open(buckets["open_time"].to_numpy(), timeframe) <= source_end
    return buckets[closed].reset_index(drop=True)


def run_backtest(alert_raw: Mapping, sets: list[CandleSet]) -> dict:
    """Evaluate an alert bar by bar in per_bar_close mode; the JSON document."""
    if not sets:
        raise ConditionError("candles", "at least one candle file is needed")
    if isinstance(alert_raw, Mapping) and "symbol" not in alert_raw:
        alert_raw = {**alert_raw, "symbol": sets[0].symbol}
    alert = normalize_alert(alert_raw)
    frames = candles_by_timeframe(sets, alert)
    plan = EvaluationPlan(step.canonical for step in alert.steps)
    result = plan.run(frames, alert.base_timeframe)
    return backtest_document(alert, frames[alert.base_timeframe], result)


def backtest_document(alert: NormalizedAlert, base: pd.DataFrame, result: PlanResult) -> dict:
    raw = {cid: series.fired for cid, series in result.series.items()}
    fired = fire_bars(
        "once" if alert.fire_mode == "once" else "per_bar_close", alert_signal(alert, raw)
    )
    closes = base["close"].to_numpy()
    ids = alert.condition_ids
    triggers = [
        {
            "bar_open_time": iso_utc(int(result.base_open_time[bar])),
            "close": float(closes[bar]),
            "values": {cid: result.series[cid].values_at(bar) for cid in ids},
        }
        for bar in np.flatnonzero(fired)
    ]
    canonical = {step.condition_id: step.canonical for step in alert.steps}
    return {
        "alert": alert.to_dict(),
        "conditions": [{"condition_id": cid, "canonical": canonical[cid]} for cid in ids],
        "bars": len(base),
        "triggers": triggers,
    }
