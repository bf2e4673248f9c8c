"""The evaluation plan: many canonical conditions of one symbol, evaluated with
each distinct indicator spec computed once and each distinct condition once.

The plan is compiled once, on its first run: every distinct indicator spec
and operand of each timeframe gets a row in that timeframe's operand table,
and the conditions are grouped by timeframe and operator. A group is
evaluated in one vectorized call whatever its operands are: one row per
condition, its left and right sides gathered from the operand table, its
arguments one value per row. So 500 "RSI(14) < x" thresholds, or 200
"close crosses above EMA(n)", cost one operator call.

`run(..., last_bars=n)` evaluates only what the last n base bars need, as
the live evaluation does for the bars that just closed: every operator
reads a bounded number of bars back (`_reach`), so the conditions are
evaluated on the last n + reach bars of their timeframe and the indicators
on their tails (`indicator_tail`). The result equals, bit for bit, the last
n bars of a full run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .catalog import OPERATORS
from .indicators import IndicatorSpec, candle_columns
from .normalize import condition_id as make_condition_id
from .operators import OperatorArgs, apply_operator, prepare_args
from .timeframes import align_to_base, resample

_ONE_BAR_BACK = frozenset(
    ("crosses_above", "crosses_below", "crosses", "entering_channel", "exiting_channel")
)
_MOVES = frozenset(("moving_up", "moving_down", "moving_up_pct", "moving_down_pct"))


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
    # Where the time went: indicators, then operators and the mapping of
    # their results onto the base bars.
    indicator_seconds: float = 0.0
    condition_seconds: float = 0.0


@dataclass
class PlanResult:
    # Open times of the bars the series cover: every base bar, or the last
    # `last_bars` of them.
    base_open_time: np.ndarray
    series: Mapping[str, ConditionSeries]
    stats: PlanStats = field(default_factory=PlanStats)
    # Every condition's fired series as one matrix, rows in `fired_order`.
    fired: np.ndarray | None = None
    fired_order: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    """One group's results on the base bars: a row per condition."""

    fired: np.ndarray
    left: np.ndarray
    right: np.ndarray | tuple[np.ndarray, np.ndarray] | None


class _SeriesView(Mapping):
    """condition_id -> ConditionSeries, made on demand from the groups'
    matrices: the live path reads most conditions as matrix rows only."""

    def __init__(self, rows: dict[str, tuple[_Outcome, int]]) -> None:
        self._rows = rows

    def __getitem__(self, cid: str) -> ConditionSeries:
        outcome, row = self._rows[cid]
        if isinstance(outcome.right, tuple):
            right = (outcome.right[0][row], outcome.right[1][row])
        else:
            right = None if outcome.right is None else outcome.right[row]
        return ConditionSeries(outcome.fired[row], outcome.left[row], right)

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, cid: object) -> bool:
        return cid in self._rows


def _spec_key(name: str, params: Mapping) -> str:
    # 14 and 14.0 are one length, as in condition_id: a condition reloaded
    # from JSON must share its indicator with one normalized afresh.
    numbers = {
        key: float(value) if isinstance(value, int | float) else value
        for key, value in params.items()
    }
    return name + json.dumps(numbers, sort_keys=True, separators=(",", ":"))


def _reach(op: str, args: Mapping) -> int:
    """How many bars before t the operator reads to answer at t."""
    if op in _ONE_BAR_BACK:
        return 1
    if op in _MOVES:
        return int(args.get("bars", OPERATORS[op].args["bars"]))
    if OPERATORS[op].right == "unary":
        # A pivot is confirmed k bars late, and its predecessor counts only
        # within lookback bars of it, its own left window k bars further.
        pivot = args.get("pivot", OPERATORS[op].args["pivot"])
        return int(2 * pivot + args.get("lookback", OPERATORS[op].args["lookback"]))
    return 0


@dataclass
class _Group:
    """Conditions of one timeframe under one operator: one vectorized call."""

    timeframe: str
    op: str
    ids: list[str] = field(default_factory=list)
    left: list[int] = field(default_factory=list)  # operand rows
    right: list[int] = field(default_factory=list)
    lower: list[int] = field(default_factory=list)
    upper: list[int] = field(default_factory=list)
    args: list[Mapping] = field(default_factory=list)
    reach: int = 0

    _prepared: OperatorArgs | None = None

    def prepared_args(self) -> OperatorArgs:
        """One value per row for each argument, checked once (ValueError
        when a row's are wrong, on every run)."""
        if self._prepared is None:
            declared = OPERATORS[self.op].args
            names = set(declared).union(*(row.keys() for row in self.args))
            stacked: dict[str, object] = {}
            for name in names:
                values = [row.get(name, declared.get(name)) for row in self.args]
                if any(value is None for value in values):
                    # prepare_args names what is missing.
                    stacked = next(dict(row) for row in self.args if name not in row)
                    break
                stacked[name] = np.array(values, dtype=np.float64)
            self._prepared = prepare_args(self.op, stacked, 2)
        return self._prepared


class _Compiled:
    """The plan's conditions as operand tables and operator groups."""

    def __init__(self, conditions: Mapping[str, Mapping]) -> None:
        # timeframe -> spec key -> spec
        self.specs: dict[str, dict[str, IndicatorSpec]] = {}
        # timeframe -> operand key -> row; and each row's source
        self.rows: dict[str, dict[str, int]] = {}
        self.sources: dict[str, list[tuple]] = {}
        groups: dict[tuple[str, str], _Group] = {}
        for cid, canonical in conditions.items():
            timeframe, op = canonical["timeframe"], canonical["op"]
            group = groups.get((timeframe, op))
            if group is None:
                group = groups[(timeframe, op)] = _Group(timeframe, op)
            args = canonical.get("args") or {}
            group.ids.append(cid)
            group.args.append(args)
            group.reach = max(group.reach, _reach(op, args))
            group.left.append(self._row(timeframe, canonical["left"]))
            right = canonical.get("right")
            if (
                OPERATORS[op].right == "channel"
                and right is not None
                and right["kind"] == "channel"
            ):
                group.lower.append(self._row(timeframe, right["lower"]))
                group.upper.append(self._row(timeframe, right["upper"]))
            elif right is not None:
                group.right.append(self._row(timeframe, right))
        self.groups = list(groups.values())
        # The conditions in group order: the rows of PlanResult.fired.
        self.order = [cid for group in self.groups for cid in group.ids]
        # How far back of the first bar needed each indicator must go: as
        # far as the furthest-reaching operator that reads it.
        self.spec_reach: dict[str, dict[str, int]] = {tf: {} for tf in self.specs}
        for group in self.groups:
            sources = self.sources[group.timeframe]
            for row in (*group.left, *group.right, *group.lower, *group.upper):
                if sources[row][0] == "indicator":
                    reaches = self.spec_reach[group.timeframe]
                    reaches[sources[row][1]] = max(reaches.get(sources[row][1], 0), group.reach)

    def _row(self, timeframe: str, operand: Mapping) -> int:
        kind = operand["kind"]
        if kind == "indicator":
            spec = _spec_key(operand["name"], operand["params"])
            specs = self.specs.setdefault(timeframe, {})
            if spec not in specs:
                specs[spec] = IndicatorSpec.of(operand["name"], operand["params"])
            key, source = f"{spec}:{operand['output']}", ("indicator", spec, operand["output"])
        elif kind == "price":
            key, source = operand["field"], ("column", operand["field"])
        elif kind == "volume":
            key, source = "volume", ("column", "volume")
        elif kind == "const":
            value = float(operand["value"])
            key, source = f"const:{value!r}", ("const", value)
        else:
            raise ValueError(f"operand kind {kind!r} cannot stand alone")
        rows = self.rows.setdefault(timeframe, {})
        if key not in rows:
            rows[key] = len(rows)
            self.sources.setdefault(timeframe, []).append(source)
        return rows[key]


class _Frame:
    """One timeframe's candles, its operand table from the first bar any
    condition reads, and how its bars map onto the base bars evaluated."""

    def __init__(self, candles: pd.DataFrame, base_index: np.ndarray | None, needed: int) -> None:
        self.bar_count = len(candles)
        self.needed = needed  # the first bar whose condition results are asked for
        self.base_index = base_index  # None: this is the base timeframe
        self.columns = candle_columns(candles)
        self.start = self.bar_count
        self.table = np.empty((0, 0))

    def first_read(self, reach: int) -> int:
        return max(0, self.needed - reach)

    def fill(self, compiled: _Compiled, timeframe: str, stats: PlanStats) -> None:
        groups = [group for group in compiled.groups if group.timeframe == timeframe]
        self.start = min((self.first_read(group.reach) for group in groups), default=self.bar_count)
        width = self.bar_count - self.start
        indicators = {}
        for key, spec in compiled.specs.get(timeframe, {}).items():
            tail = self.bar_count - self.first_read(compiled.spec_reach[timeframe].get(key, 0))
            indicators[key] = spec.tail(self.columns, tail)
            stats.indicator_computations += 1
        sources = compiled.sources.get(timeframe, [])
        self.table = np.empty((len(sources), width))
        for row, source in enumerate(sources):
            if source[0] == "column":
                self.table[row] = self.columns[source[1]][self.start :]
            elif source[0] == "indicator":
                values = indicators[source[1]][source[2]]
                # Before its tail, no operator reading this row looks.
                self.table[row, : width - len(values)] = np.nan
                self.table[row, width - len(values) :] = values
            else:
                self.table[row] = source[1]

    def read(self, rows: list[int], first: int) -> np.ndarray:
        return self.table[rows, first - self.start :]

    def prices(self, field: str, first: int) -> np.ndarray:
        return self.columns[field][first:]

    def to_base(self, values: np.ndarray, first: int, evaluated: int, fill) -> np.ndarray:
        """`values` (rows x this frame's bars from `first`) on the base bars
        evaluated (the last `evaluated`)."""
        if self.base_index is None:
            return values[:, values.shape[1] - evaluated :]
        local = self.base_index - first
        if values.shape[-1] == 0:
            return np.full((*values.shape[:-1], len(local)), fill)
        return np.where(local >= 0, values[..., np.maximum(local, 0)], fill)


class EvaluationPlan:
    """Built once from the conditions of one symbol; `run` evaluates them over
    candles. The plan may be reused for every bar (it holds no candle data)."""

    def __init__(self, conditions: Iterable[Mapping]):
        self.conditions: dict[str, Mapping] = {}
        for canonical in conditions:
            self.conditions.setdefault(make_condition_id(canonical), canonical)
        self.timeframes = sorted({c["timeframe"] for c in self.conditions.values()})
        self._compiled: _Compiled | None = None

    @classmethod
    def from_identified(cls, conditions: Mapping[str, Mapping]) -> EvaluationPlan:
        """A plan over canonical conditions keyed by their condition_id, as
        normalization returned them: the ids are trusted, not recomputed."""
        plan = cls(())
        plan.conditions = dict(conditions)
        plan.timeframes = sorted({c["timeframe"] for c in plan.conditions.values()})
        return plan

    @property
    def condition_order(self) -> list[str]:
        """The conditions in the order of the rows of `PlanResult.fired`."""
        return self._compile().order

    def _compile(self) -> _Compiled:
        if self._compiled is None:
            self._compiled = _Compiled(self.conditions)
        return self._compiled

    def run(
        self,
        candles: Mapping[str, pd.DataFrame],
        base_timeframe: str,
        *,
        last_bars: int | None = None,
    ) -> PlanResult:
        """`candles` maps timeframes to candle frames; it must hold the base
        timeframe. A condition timeframe missing from it is resampled from the
        base candles on UTC boundaries. With `last_bars`, the result covers
        only the last `last_bars` base bars (all of them when there are
        fewer), with the values a full run has there."""
        compiled = self._compile()
        stats = PlanStats(conditions=len(self.conditions))
        base = candles[base_timeframe]
        base_open = base["open_time"].to_numpy(dtype=np.int64)
        evaluated = len(base_open) if last_bars is None else max(0, min(last_bars, len(base_open)))
        first = len(base_open) - evaluated

        frames: dict[str, _Frame] = {}
        for timeframe in {base_timeframe, *self.timeframes}:
            if timeframe == base_timeframe:
                frames[timeframe] = _Frame(base, None, first)
                continue
            frame = candles.get(timeframe)
            if frame is None:
                frame = resample(base, timeframe)
                stats.resamples += 1
            index = align_to_base(
                base_open[first:],
                base_timeframe,
                frame["open_time"].to_numpy(dtype=np.int64),
                timeframe,
            )
            used = index[index >= 0]
            needed = 0 if last_bars is None else int(used.min()) if used.size else len(frame)
            frames[timeframe] = _Frame(frame, index, needed)
        started = time.perf_counter()
        for timeframe, frame in frames.items():
            frame.fill(compiled, timeframe, stats)
        filled = time.perf_counter()

        rows: dict[str, tuple[_Outcome, int]] = {}
        outcomes = []
        for group in compiled.groups:
            outcome = self._evaluate(group, frames[group.timeframe], evaluated)
            outcomes.append(outcome)
            for row, cid in enumerate(group.ids):
                rows[cid] = (outcome, row)
            stats.operator_calls += 1
            stats.condition_evaluations += len(group.ids)
        if outcomes:
            fired = np.concatenate([outcome.fired for outcome in outcomes])
        else:
            fired = np.zeros((0, evaluated), dtype=bool)
        stats.indicator_seconds = filled - started
        stats.condition_seconds = time.perf_counter() - filled
        return PlanResult(
            base_open_time=base_open[first:],
            series=_SeriesView(rows),
            stats=stats,
            fired=fired,
            fired_order=compiled.order,
        )

    @staticmethod
    def _evaluate(group: _Group, frame: _Frame, evaluated: int) -> _Outcome:
        first = frame.first_read(group.reach)
        left = frame.read(group.left, first)
        if group.lower:
            right = (frame.read(group.lower, first), frame.read(group.upper, first))
        elif group.right:
            right = frame.read(group.right, first)
        else:
            right = None
        fired = apply_operator(
            group.op,
            left,
            right,
            group.prepared_args(),
            high=frame.prices("high", first),
            low=frame.prices("low", first),
        )

        def on_base(values: np.ndarray, fill) -> np.ndarray:
            return frame.to_base(values, first, evaluated, fill)

        if isinstance(right, tuple):
            right = (on_base(right[0], np.nan), on_base(right[1], np.nan))
        elif right is not None:
            right = on_base(right, np.nan)
        return _Outcome(on_base(fired, False), on_base(left, np.nan), right)
