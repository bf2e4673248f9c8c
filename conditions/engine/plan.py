"""The evaluation plan: many canonical conditions of one symbol, evaluated with
each distinct indicator spec computed once and each distinct condition once.

Conditions that compare the same left operand with different constants under
the same operator are stacked and evaluated in one vectorized call, so 500
"RSI(14) < x" thresholds cost one RSI and one 2-D comparison.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .catalog import OPERATORS
from .indicators import compute_indicator
from .normalize import condition_id as make_condition_id
from .operators import apply_operator
from .timeframes import align_to_base, resample


@dataclass(frozen=True)
class ConditionSeries:
    """One condition over the base bars: whether it held, and what it compared."""

    fired: np.ndarray  # bool
    left: np.ndarray  # float, NaN where missing
    right: np.ndarray | tuple[np.ndarray, np.ndarray] | None

    def values_at(self, bar: int) -> dict:
        def number(series: np.ndarray) -> float | None:
            value = float(series[bar])
            return None if np.isnan(value) else value

        if self.right is None:
            right = None
        elif isinstance(self.right, tuple):
            right = {"lower": number(self.right[0]), "upper": number(self.right[1])}
        else:
            right = number(self.right)
        return {"left": number(self.left), "right": right}


@dataclass
class PlanStats:
    """What one run computed: the sharing is measurable."""

    conditions: int = 0
    condition_evaluations: int = 0
    indicator_computations: int = 0
    operator_calls: int = 0
    resamples: int = 0


@dataclass
class PlanResult:
    base_open_time: np.ndarray
    series: dict[str, ConditionSeries]
    stats: PlanStats = field(default_factory=PlanStats)


def _spec_key(name: str, params: Mapping) -> str:
    # 14 and 14.0 are one length, as in condition_id: a condition reloaded
    # from JSON must share its indicator with one normalized afresh.
    numbers = {
        key: float(value) if isinstance(value, int | float) else value
        for key, value in params.items()
    }
    return name + json.dumps(numbers, sort_keys=True, separators=(",", ":"))


def _operand_key(operand: Mapping) -> str:
    return json.dumps(operand, sort_keys=True, separators=(",", ":"))


class _Frame:
    """One timeframe's candles, its computed indicators, and how its bars map
    onto the base bars."""

    def __init__(self, candles: pd.DataFrame, base_index: np.ndarray | None):
        self.candles = candles
        self.base_index = base_index  # None: this is the base timeframe
        self.indicators: dict[str, dict[str, np.ndarray]] = {}
        self.columns = {
            name: candles[name].to_numpy(dtype=np.float64)
            for name in ("open", "high", "low", "close", "volume")
        }

    def to_base(self, values: np.ndarray, fill) -> np.ndarray:
        if self.base_index is None:
            return values
        if values.shape[-1] == 0:
            return np.full((*values.shape[:-1], len(self.base_index)), fill)
        return np.where(self.base_index >= 0, values[..., self.base_index], fill)


class EvaluationPlan:
    """Built once from the conditions of one symbol; `run` evaluates them over
    candles. The plan may be reused for every bar (it holds no candle data)."""

    def __init__(self, conditions: Iterable[Mapping]):
        self.conditions: dict[str, Mapping] = {}
        for canonical in conditions:
            self.conditions.setdefault(make_condition_id(canonical), canonical)
        self.timeframes = sorted({c["timeframe"] for c in self.conditions.values()})

    def run(self, candles: Mapping[str, pd.DataFrame], base_timeframe: str) -> PlanResult:
        """`candles` maps timeframes to candle frames; it must hold the base
        timeframe. A condition timeframe missing from it is resampled from the
        base candles on UTC boundaries."""
        stats = PlanStats(conditions=len(self.conditions))
        base = candles[base_timeframe]
        base_open = base["open_time"].to_numpy(dtype=np.int64)
        frames: dict[str, _Frame] = {base_timeframe: _Frame(base, None)}
        for timeframe in self.timeframes:
            if timeframe in frames:
                continue
            frame = candles.get(timeframe)
            if frame is None:
                frame = resample(base, timeframe)
                stats.resamples += 1
            index = align_to_base(
                base_open, base_timeframe, frame["open_time"].to_numpy(dtype=np.int64), timeframe
            )
            frames[timeframe] = _Frame(frame, index)

        series: dict[str, ConditionSeries] = {}
        for (timeframe, op, _left_key, _args_key), members in self._groups().items():
            frame = frames[timeframe]
            left = self._operand(frame, members[0][1]["left"], stats)
            args = members[0][1].get("args")
            if len(members) > 1:
                # Stacked: one left series, one constant per condition.
                thresholds = np.array([[c["right"]["value"]] for _, c in members], dtype=np.float64)
                stacked_left = np.broadcast_to(left, (len(members), len(left)))
                fired = apply_operator(
                    op,
                    stacked_left,
                    thresholds,
                    args,
                    high=frame.columns["high"],
                    low=frame.columns["low"],
                )
                stats.operator_calls += 1
                left_base = frame.to_base(left, np.nan)
                fired_base = frame.to_base(fired, False)
                for row, (cid, canonical) in enumerate(members):
                    # Missing where the timeframe has no closed candle yet, as
                    # when the condition is evaluated on its own.
                    constant = np.full(len(frame.candles), canonical["right"]["value"])
                    series[cid] = ConditionSeries(
                        fired_base[row], left_base, frame.to_base(constant, np.nan)
                    )
            else:
                cid, canonical = members[0]
                right = self._right(frame, canonical, stats)
                fired = apply_operator(
                    op, left, right, args, high=frame.columns["high"], low=frame.columns["low"]
                )
                stats.operator_calls += 1
                if isinstance(right, tuple):
                    right_base = (frame.to_base(right[0], np.nan), frame.to_base(right[1], np.nan))
                elif right is None:
                    right_base = None
                else:
                    right_base = frame.to_base(right, np.nan)
                series[cid] = ConditionSeries(
                    frame.to_base(fired, False), frame.to_base(left, np.nan), right_base
                )
            stats.condition_evaluations += len(members)
        return PlanResult(base_open_time=base_open, series=series, stats=stats)

    def _groups(self) -> dict[tuple, list[tuple[str, Mapping]]]:
        """Conditions comparing one left operand with constants under one
        operator share a group; every other condition is a group of its own."""
        groups: dict[tuple, list[tuple[str, Mapping]]] = defaultdict(list)
        for cid, canonical in self.conditions.items():
            op = canonical["op"]
            args_key = _operand_key(canonical.get("args") or {})
            right = canonical.get("right")
            stackable = (
                OPERATORS[op].right == "value" and right is not None and right["kind"] == "const"
            )
            left_key = _operand_key(canonical["left"]) if stackable else cid
            groups[(canonical["timeframe"], op, left_key, args_key)].append((cid, canonical))
        return groups

    def _operand(self, frame: _Frame, operand: Mapping, stats: PlanStats) -> np.ndarray:
        kind = operand["kind"]
        if kind == "indicator":
            key = _spec_key(operand["name"], operand["params"])
            outputs = frame.indicators.get(key)
            if outputs is None:
                outputs = compute_indicator(frame.candles, operand["name"], operand["params"])
                frame.indicators[key] = outputs
                stats.indicator_computations += 1
            return outputs[operand["output"]]
        if kind == "price":
            return frame.columns[operand["field"]]
        if kind == "volume":
            return frame.columns["volume"]
        if kind == "const":
            return np.full(len(frame.candles), float(operand["value"]))
        raise ValueError(f"operand kind {kind!r} cannot stand alone")

    def _right(self, frame: _Frame, canonical: Mapping, stats: PlanStats):
        right = canonical.get("right")
        if right is None:
            return None
        if right["kind"] == "channel":
            return (
                self._operand(frame, right["lower"], stats),
                self._operand(frame, right["upper"], stats),
            )
        return self._operand(frame, right, stats)
