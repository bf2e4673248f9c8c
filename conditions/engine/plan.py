"""The evaluation plan: many canonical conditions of one symbol, evaluated with
each distinct indicator spec computed once and each distinct condition once.

The plan is compiled once, on its first run: every distinct indicator spec
and operand of each timeframe gets a row in that timeframe's operand table,
and the conditions are grouped by timeframe and operator, one row per
condition, its operands rows of the operand table, its arguments one value
per row. So 500 "RSI(14) < x" thresholds, or 200 "close crosses above
EMA(n)", cost one operator group.

Compiling also lays the plan out as index arrays, so that a run of a
timeframe is a few compiled calls whatever the number of conditions: one
computes every indicator into the table (`tails_into`), one every operator
of a bar and the bar before (`pointwise_into`), one every movement and
divergence (`unary_into`). A live evaluation evaluates a pair's bars that
just closed in a fraction of a millisecond.

`run(..., last_bars=n)` evaluates only what the last n base bars need, as
the live evaluation does for the bars that just closed: every operator
reads a bounded number of bars back (`_reach`), so the conditions are
evaluated on the last n + reach bars of their timeframe and the indicators
on their tails (as `indicator_tail` computes them). The result equals, bit for bit, the last
n bars of a full run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from .catalog import INDICATORS, OPERATORS, SOURCES
from .indicator_loops import tails_into
from .indicators import IndicatorSpec, candle_arrays
from .normalize import condition_id as make_condition_id
from .operators import (
    POINTWISE,
    UNARY,
    OperatorArgs,
    pointwise_into,
    prepare_args,
    unary_arguments,
    unary_into,
)
from .timeframes import align_to_base, resample

_ONE_BAR_BACK = frozenset(
    ("crosses_above", "crosses_below", "crosses", "entering_channel", "exiting_channel")
)
_MOVES = frozenset(("moving_up", "moving_down", "moving_up_pct", "moving_down_pct"))
_HIGH, _LOW = SOURCES.index("high"), SOURCES.index("low")
# The shape of a condition's right side.
_NONE, _VALUE, _CHANNEL = range(3)


@dataclass(frozen=True)
class ConditionSeries:
    """One condition over the base bars: whether it held, and what it compared."""

    fired: np.ndarray  # bool
    left: np.ndarray  # float, NaN where missing
    right: np.ndarray | tuple[np.ndarray, np.ndarray] | None

    def values_at(self, bar: int) -> dict:
        if self.right is None:
            right = None
        elif isinstance(self.right, tuple):
            right = {"lower": _number(self.right[0][bar]), "upper": _number(self.right[1][bar])}
        else:
            right = _number(self.right[bar])
        return {"left": _number(self.left[bar]), "right": right}


def _number(value) -> float | None:
    """A value as JSON gives it: NaN (missing) is null."""
    value = float(value)
    return None if np.isnan(value) else value


@dataclass
class PlanStats:
    """What one run computed: the sharing is measurable."""

    conditions: int = 0
    condition_evaluations: int = 0
    indicator_computations: int = 0
    operator_calls: int = 0  # operator groups, each evaluated as one
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


# The shape of a condition's right side in SeriesColumns: none, a value, a channel.
NO_RIGHT, VALUE, CHANNEL = _NONE, _VALUE, _CHANNEL


@dataclass
class SeriesColumns:
    """Every condition's values at some bars, as columns of one row per
    (bar, condition), bar by bar; NaN is a missing value, and a right side
    the condition's shape does not have."""

    ids: list[str]  # the conditions, in the order of each bar's rows
    shapes: np.ndarray  # NO_RIGHT, VALUE or CHANNEL
    fired: np.ndarray
    left: np.ndarray
    right: np.ndarray  # a VALUE's right side
    lower: np.ndarray  # a CHANNEL's
    upper: np.ndarray

    def values_at(self, row: int) -> dict:
        """What the condition compared at the row, as ConditionSeries.values_at gives it."""
        shape = self.shapes[row]
        if shape == _CHANNEL:
            right = {"lower": _number(self.lower[row]), "upper": _number(self.upper[row])}
        else:
            right = _number(self.right[row]) if shape == _VALUE else None
        return {"left": _number(self.left[row]), "right": right}


def series_columns(series: Mapping[str, ConditionSeries], bars: Sequence[int]) -> SeriesColumns:
    """The values of every condition in `series` at the bars (positions in
    the series), as columns."""
    if isinstance(series, _SeriesView):
        return series.columns(bars)
    ids = list(series)
    every = [series[cid] for cid in ids]
    shapes = [
        _NONE if s.right is None else _CHANNEL if isinstance(s.right, tuple) else _VALUE
        for s in every
    ]
    nan = np.nan

    def column(value) -> np.ndarray:
        return np.array(
            [value(s, shape, bar) for bar in bars for s, shape in zip(every, shapes, strict=True)],
            dtype=np.float64,
        )

    return SeriesColumns(
        ids=ids,
        shapes=np.tile(np.array(shapes, dtype=np.int16), len(bars)),
        fired=np.array([s.fired[bar] for bar in bars for s in every], dtype=bool),
        left=column(lambda s, shape, bar: s.left[bar]),
        right=column(lambda s, shape, bar: s.right[bar] if shape == _VALUE else nan),
        lower=column(lambda s, shape, bar: s.right[0][bar] if shape == _CHANNEL else nan),
        upper=column(lambda s, shape, bar: s.right[1][bar] if shape == _CHANNEL else nan),
    )


class _SeriesView(Mapping):
    """condition_id -> ConditionSeries, made on demand from the run's
    matrices: the live path reads most conditions as matrix rows only, and
    the operands' values only when it reads a series (`operands` makes
    them, on the first read)."""

    def __init__(
        self,
        index: Mapping[str, tuple[int, int]],
        fired: np.ndarray,
        operands: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        self._index = index
        self._fired = fired
        self._operands = operands
        self._values: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getitem__(self, cid: str) -> ConditionSeries:
        position, shape = self._index[cid]
        if self._values is None:
            self._values = self._operands()
        left, right, upper = self._values
        if shape == _CHANNEL:
            right = (right[position], upper[position])
        else:
            right = right[position] if shape == _VALUE else None
        return ConditionSeries(self._fired[position], left[position], right)

    def columns(self, bars: Sequence[int]) -> SeriesColumns:
        """series_columns, read straight from the matrices."""
        ids = list(self._index)
        positions = _indices(position for position, _ in self._index.values())
        shapes = np.fromiter((shape for _, shape in self._index.values()), np.int16, len(ids))
        if self._values is None:
            self._values = self._operands()
        left, right, upper = self._values
        at = np.asarray(bars, dtype=np.intp)
        # Rows bar by bar: the transpose of (condition x bar), flattened.
        picked = [matrix[positions][:, at].T.ravel() for matrix in (left, right, upper)]
        kinds = np.tile(shapes, len(at))
        return SeriesColumns(
            ids=ids,
            shapes=kinds,
            fired=self._fired[positions][:, at].T.ravel(),
            left=picked[0],
            right=np.where(kinds == _VALUE, picked[1], np.nan),
            lower=np.where(kinds == _CHANNEL, picked[1], np.nan),
            upper=np.where(kinds == _CHANNEL, picked[2], np.nan),
        )

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, cid: object) -> bool:
        return cid in self._index


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
    # The group's rows of PlanResult.fired: start, start + 1, ...
    start: int = 0

    _prepared: OperatorArgs | None = None

    def prepared_args(self) -> OperatorArgs:
        """One value per row for each argument, checked once (ValueError
        when a row's are wrong)."""
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

    def right_shape(self) -> int:
        """The shape of every row's right side, as the operator requires it
        (ValueError, as apply_operator's, when a row's is another)."""
        kind = OPERATORS[self.op].right
        if kind == "unary":
            if self.right or self.lower:
                raise ValueError(f"{self.op} takes no right-hand side")
            return _NONE
        if kind == "channel":
            if self.right or len(self.lower) != len(self.ids):
                raise ValueError(f"{self.op} needs right=(lower, upper)")
            return _CHANNEL
        if len(self.right) != len(self.ids):
            raise ValueError(f"{self.op} needs a right-hand series")
        return _VALUE


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
        # condition_id -> (row of PlanResult.fired, shape of its right side)
        self.index: dict[str, tuple[int, int]] = {}
        for group in self.groups:
            group.start = len(self.index)
            shape = group.right_shape()
            group.prepared_args()
            for cid in group.ids:
                self.index[cid] = (len(self.index), shape)
        self.layouts = {
            timeframe: _Layout(self, timeframe)
            for timeframe in dict.fromkeys(group.timeframe for group in self.groups)
        }

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


def _indices(values: Iterable[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64)


class _Layout:
    """One timeframe's share of a compiled plan, laid out as index arrays
    once, so that a run builds nothing per condition or per operand.

    Its operand table has a row per operand: price columns, constants and
    indicator outputs. An indicator is computed on the tail its readers
    need: as far back of the first bar evaluated as the furthest-reaching
    operator that reads it.
    """

    def __init__(self, compiled: _Compiled, timeframe: str) -> None:
        groups = [group for group in compiled.groups if group.timeframe == timeframe]
        for group in groups:
            if group.op not in POINTWISE and group.op not in UNARY:
                raise ValueError(f"operator {group.op!r} is not implemented")  # catalog grew
        sources = compiled.sources[timeframe]
        self.row_count = len(sources)
        self.reach = max(group.reach for group in groups)
        self.conditions = sum(len(group.ids) for group in groups)
        self.groups = len(groups)

        spec_reach: dict[str, int] = {}
        for group in groups:
            for row in (*group.left, *group.right, *group.lower, *group.upper):
                if sources[row][0] == "indicator":
                    key = sources[row][1]
                    spec_reach[key] = max(spec_reach.get(key, 0), group.reach)
        outputs: dict[str, list[tuple[str, int]]] = {key: [] for key in spec_reach}
        columns: list[tuple[int, int]] = []
        constants: list[tuple[int, float]] = []
        for row, source in enumerate(sources):
            if source[0] == "indicator":
                outputs[source[1]].append((source[2], row))
            elif source[0] == "column":
                columns.append((row, SOURCES.index(source[1])))
            else:
                constants.append((row, source[1]))
        specs = compiled.specs.get(timeframe, {})
        self.indicators = len(specs)
        # The distinct indicator specs as the compiled loops take them.
        numbers = [spec.numbers() for spec in specs.values()]
        self.kinds = _indices(spec.kind for spec in specs.values())
        self.params = np.array([whole for whole, _ in numbers], dtype=np.int64).reshape(-1, 3)
        self.stds = np.array([std for _, std in numbers], dtype=np.float64)
        self.warmups = _indices(spec.warmup for spec in specs.values())
        self.spec_reach = _indices(spec_reach[key] for key in specs)
        self.output_rows = np.full((len(specs), 5), -1, dtype=np.int64)
        for index, (key, spec) in enumerate(specs.items()):
            names = list(INDICATORS[spec.name].outputs)
            for output, row in outputs[key]:
                self.output_rows[index, names.index(output)] = row
        self.column_rows = _indices(row for row, _ in columns)
        self.column_sources = _indices(source for _, source in columns)
        self.constant_rows = _indices(row for row, _ in constants)
        self.constant_values = np.array([[value] for _, value in constants]).reshape(-1, 1)

        # Every condition's operands, by its row of PlanResult.fired.
        self.positions = _indices(
            group.start + i for group in groups for i in range(len(group.ids))
        )
        self.left = _indices(row for group in groups for row in group.left)
        valued = [group for group in groups if group.right or group.lower]
        self.right_positions = _indices(
            group.start + i for group in valued for i in range(len(group.ids))
        )
        self.right = _indices(row for group in valued for row in group.right or group.lower)
        channels = [group for group in groups if group.lower]
        self.upper_positions = _indices(
            group.start + i for group in channels for i in range(len(group.ids))
        )
        self.upper = _indices(row for group in channels for row in group.upper)

        # The operators of one bar (and the one before) in one compiled
        # call, the movements and divergences in another.
        pointwise = [group for group in groups if group.op in POINTWISE]
        self.pointwise_positions = _indices(
            group.start + i for group in pointwise for i in range(len(group.ids))
        )
        self.pointwise_codes = _indices(
            POINTWISE[group.op] for group in pointwise for _ in group.ids
        )
        self.pointwise_left = _indices(row for group in pointwise for row in group.left)
        self.pointwise_right = _indices(
            row for group in pointwise for row in group.right or group.lower
        )
        self.pointwise_upper = _indices(
            row for group in pointwise for row in group.upper or [-1] * len(group.ids)
        )
        unary = [group for group in groups if group.op in UNARY]
        self.unary_positions = _indices(
            group.start + i for group in unary for i in range(len(group.ids))
        )
        self.unary_codes = _indices(UNARY[group.op] for group in unary for _ in group.ids)
        self.unary_left = _indices(row for group in unary for row in group.left)
        arguments = [unary_arguments(group.prepared_args(), len(group.ids)) for group in unary]
        self.unary_whole = _indices(value for whole, _ in arguments for value in whole)
        self.unary_amount = np.array(
            [value for _, amount in arguments for value in amount], dtype=np.float64
        )


class _Frame:
    """One timeframe's candles, its operand table from the first bar any
    condition reads, and how its bars map onto the base bars evaluated."""

    def __init__(
        self, prices: np.ndarray, base_index: np.ndarray | None, needed: int, reach: int
    ) -> None:
        self.prices = prices  # candle_prices
        self.bar_count = prices.shape[1]
        self.needed = needed  # the first bar whose condition results are asked for
        self.base_index = base_index  # None: this is the base timeframe
        self.start = max(0, needed - reach)
        self.width = self.bar_count - self.start
        self.table = np.empty((0, 0))
        # The table column of each base bar evaluated; -1 where none.
        if base_index is None:
            self.columns = np.arange(needed - self.start, self.width)
        else:
            self.columns = np.where(base_index >= 0, base_index - self.start, -1)

    def fill(self, layout: _Layout) -> None:
        start = self.start
        self.table = table = np.empty((layout.row_count, self.width))
        table[layout.column_rows] = self.prices[layout.column_sources, start:]
        table[layout.constant_rows] = layout.constant_values
        # Each indicator's tail reaches back as far as its readers read.
        tails = self.bar_count - np.maximum(0, self.needed - layout.spec_reach)
        tails_into(
            table,
            self.prices,
            layout.kinds,
            layout.params,
            layout.stds,
            layout.warmups,
            tails,
            layout.output_rows,
        )

    def on_base(self, rows: np.ndarray) -> np.ndarray:
        """Table rows `rows` at the base bars evaluated, NaN where none."""
        columns = self.columns
        if self.base_index is None:
            return self.table[rows, self.width - len(columns) :]
        if self.width == 0:
            return np.full((len(rows), len(columns)), np.nan)
        values = self.table[rows[:, None], np.maximum(columns, 0)]
        return np.where(columns >= 0, values, np.nan)


def _operands(
    compiled: _Compiled, frames: Mapping[str, _Frame], evaluated: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every condition's left, right (a channel's lower) and upper operand at
    the base bars evaluated, rows as PlanResult.fired's."""
    count = len(compiled.order)
    left = np.empty((count, evaluated))
    right = np.empty((count, evaluated))
    upper = np.empty((count, evaluated))
    for timeframe, frame in frames.items():
        layout = compiled.layouts[timeframe]
        left[layout.positions] = frame.on_base(layout.left)
        right[layout.right_positions] = frame.on_base(layout.right)
        upper[layout.upper_positions] = frame.on_base(layout.upper)
    return left, right, upper


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
        only: Sequence[str] | None = None,
    ) -> PlanResult:
        """`candles` maps timeframes to candle frames; it must hold the base
        timeframe. A condition timeframe missing from it is resampled from the
        base candles on UTC boundaries. With `last_bars`, the result covers
        only the last `last_bars` base bars (all of them when there are
        fewer), with the values a full run has there. With `only` (some of
        the plan's condition_ids), the result holds just those, `fired` rows
        in that order: what a plan over them alone gives, though every
        condition of the plan is evaluated (a kept plan need not be
        recompiled when conditions leave it)."""
        compiled = self._compile()
        stats = PlanStats(conditions=len(self.conditions))
        base = candles[base_timeframe]
        base_open, base_prices = candle_arrays(base)
        evaluated = len(base_open) if last_bars is None else max(0, min(last_bars, len(base_open)))
        first = len(base_open) - evaluated

        frames: dict[str, _Frame] = {}
        for timeframe, layout in compiled.layouts.items():
            if timeframe == base_timeframe:
                frames[timeframe] = _Frame(base_prices, None, first, layout.reach)
                continue
            frame = candles.get(timeframe)
            if frame is None:
                frame = resample(base, timeframe)
                stats.resamples += 1
            open_time, prices = candle_arrays(frame)
            index = align_to_base(base_open[first:], base_timeframe, open_time, timeframe)
            used = index[index >= 0]
            needed = 0 if last_bars is None else int(used.min()) if used.size else len(open_time)
            frames[timeframe] = _Frame(prices, index, needed, layout.reach)
        started = time.perf_counter()
        for timeframe, frame in frames.items():
            frame.fill(compiled.layouts[timeframe])
            stats.indicator_computations += compiled.layouts[timeframe].indicators
        filled = time.perf_counter()

        fired = np.empty((len(compiled.order), evaluated), dtype=bool)
        for timeframe, frame in frames.items():
            layout = compiled.layouts[timeframe]
            pointwise_into(
                fired,
                layout.pointwise_positions,
                layout.pointwise_codes,
                frame.table,
                layout.pointwise_left,
                layout.pointwise_right,
                layout.pointwise_upper,
                frame.columns,
            )
            unary_into(
                fired,
                layout.unary_positions,
                layout.unary_codes,
                frame.table,
                layout.unary_left,
                layout.unary_whole,
                layout.unary_amount,
                frame.prices[_HIGH, frame.start :],
                frame.prices[_LOW, frame.start :],
                frame.columns,
            )
            stats.operator_calls += layout.groups
            stats.condition_evaluations += layout.conditions
        stats.indicator_seconds = filled - started
        stats.condition_seconds = time.perf_counter() - filled
        index, order, rows = compiled.index, compiled.order, fired
        if only is not None:
            # The series read the whole matrices at the plan's rows; `fired`
            # is cut down to the conditions asked for.
            index = {cid: compiled.index[cid] for cid in only}
            order = list(only)
            rows = fired[_indices(position for position, _ in index.values())]
            stats.conditions = stats.condition_evaluations = len(order)
        return PlanResult(
            base_open_time=base_open[first:],
            series=_SeriesView(index, fired, partial(_operands, compiled, frames, evaluated)),
            stats=stats,
            fired=rows,
            fired_order=order,
        )
