"""The operators of the condition language (CONDITIONS.md section 4), vectorized.

Every operator takes float64 series where NaN means "missing" and answers a
bool per bar. Series are 1-D (bars) or N-D with bars on the last axis, so the
evaluation plan can stack many conditions that share an operator (one per row)
and evaluate them in one call. Comparison and equality are array
expressions; cross, channel, movement and divergence operators are compiled
loops over the rows and bars: no Python loop per bar or per condition.

The rule shared by all operators: any missing input at a bar the operator
reads (t, and t-1 or t-N where used, and the pivot windows for divergences)
gives false at t. Nothing at bar t ever reads a bar after t, so an evaluation
on a series truncated after t answers the same at t.

Movement (args ``bars`` N, a whole number >= 1, and ``amount`` x or ``pct``
p): the percentage is the spec's formula taken literally,
(a[t] - a[t-N]) / a[t-N] * 100, so with a negative a[t-N] (MACD, say) its
sign follows the division; a[t-N] == 0 has no percentage and gives false.

Divergence family (args ``pivot`` k and ``lookback``):

- A *pivot low* at bar i: low[i] is strictly below every low in [i-k, i-1]
  and at or below every low in [i+1, i+k]; both windows must lie inside the
  data and contain no missing value. A *pivot high* is the mirror image with
  high (strictly above on the left, at or above on the right). The pivot is
  confirmed at bar i+k, never earlier. Two pivots of one type are always more
  than k bars apart, so the previous pivot of a type is always confirmed
  before the next one.
- For a pivot p2 confirmed at t = p2+k, p1 is the previous pivot of the same
  type (the latest one before p2; no search further back). A signal needs
  p2 - p1 <= lookback and the indicator present at both p1 and p2.
- ``bullish_divergence``: pivot lows, low[p2] < low[p1] and
  indicator[p2] > indicator[p1].
- ``bearish_divergence``: pivot highs, high[p2] > high[p1] and
  indicator[p2] < indicator[p1].
- ``divergence``: either of the two at t.
- ``convergence``: for pivot lows (price low) and for pivot highs (price high)
  alike, price and indicator moved strictly the same way from p1 to p2: both
  rose (price[p2] > price[p1] and indicator[p2] > indicator[p1]) or both fell.
  An equal price or an equal indicator value is no direction, so it gives no
  convergence (just as it gives no divergence). It fires at t = p2+k when the
  pivot low or the pivot high confirmed at t (a bar can be both) qualifies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from conditions.engine.catalog import OPERATORS

# eq treats values this close (relative to the right side, absolute below 1)
# as equal, so an indicator that lands on a level up to rounding still counts.
EQ_RELATIVE_TOLERANCE = 1e-9

_COMPARISONS = {
    "gt": np.greater,
    "gte": np.greater_equal,
    "lt": np.less,
    "lte": np.less_equal,
}
_CROSSES = ("crosses_above", "crosses_below", "crosses")
_MOVES = ("moving_up", "moving_down", "moving_up_pct", "moving_down_pct")

Right = np.ndarray | tuple[np.ndarray, np.ndarray] | float | None


@dataclass(frozen=True)
class OperatorArgs:
    """An operator's arguments, defaults filled, checked and shaped once for
    left operands of `ndim` dimensions: a plan calls the same operator on
    the same conditions bar after bar."""

    op: str
    ndim: int
    values: dict[str, np.ndarray]


def prepare_args(op: str, args: Mapping[str, float | np.ndarray] | None, ndim: int) -> OperatorArgs:
    """`args` as `apply_operator` takes them, resolved for a left of `ndim`
    dimensions. Raises ValueError as `apply_operator` would."""
    spec = OPERATORS.get(op)
    if spec is None:
        raise ValueError(f"unknown operator {op!r} (expected a canonical name)")
    return OperatorArgs(op, ndim, _resolve_args(op, spec.args, args, ndim))


def apply_operator(
    op: str,
    left: np.ndarray,
    right: Right,
    args: Mapping[str, float | np.ndarray] | OperatorArgs | None = None,
    *,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> np.ndarray:
    """Evaluate operator ``op`` on every bar and return a bool array of left's shape.

    ``op`` is a canonical operator name (a key of ``catalog.OPERATORS``).
    ``left`` holds the bars on its last axis; extra leading axes are
    independent conditions. ``right`` must broadcast to left's shape (use shape
    (n, 1) for one constant per condition); channel operators take a
    ``(lower, upper)`` pair, unary operators (movement, divergences) take None.
    ``args`` values are scalars or, for stacked conditions, arrays of shape
    (n,) or (n, 1) giving one value per condition; missing args take the
    catalog defaults; `prepare_args` resolves them once for many calls.
    Divergence operators also need ``high`` and ``low``, the 1-D price series
    of the same candles.

    Raises ValueError on an unknown operator, a wrong right-hand side, or an
    invalid or missing argument.
    """
    spec = OPERATORS.get(op)
    if spec is None:
        raise ValueError(f"unknown operator {op!r} (expected a canonical name)")
    left = np.asarray(left, dtype=np.float64)
    if left.ndim == 0:
        raise ValueError("left must have a bars axis")
    if isinstance(args, OperatorArgs) and args.op == op and args.ndim == left.ndim:
        resolved = args.values
    else:
        if isinstance(args, OperatorArgs):
            raise ValueError(
                f"arguments prepared for {args.op} on {args.ndim}-D, not {op} on {left.ndim}-D"
            )
        resolved = _resolve_args(op, spec.args, args, left.ndim)

    if spec.right == "unary":
        if right is not None:
            raise ValueError(f"{op} takes no right-hand side")
        if op in _MOVES:
            return _moving(op, left, resolved)
        return _divergence(op, left, resolved, high, low)

    if spec.right == "channel":
        if not isinstance(right, tuple) or len(right) != 2:
            raise ValueError(f"{op} needs right=(lower, upper)")
        lower = _broadcast(right[0], left.shape, "lower")
        upper = _broadcast(right[1], left.shape, "upper")
        return _channel(op, left, lower, upper)

    if right is None or isinstance(right, tuple):
        raise ValueError(f"{op} needs a right-hand series")
    right_arr = _broadcast(right, left.shape, "right")
    if op in _COMPARISONS:
        # NaN compares false with every operator, which is the missing rule.
        return _COMPARISONS[op](left, right_arr)
    if op == "eq":
        return _equal(left, right_arr)
    if op in _CROSSES:
        return _cross(op, left, right_arr)
    raise ValueError(f"operator {op!r} is not implemented")  # catalog grew


def _broadcast(values: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape == shape:
        return array
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {array.shape} does not fit left {shape}") from None


def _resolve_args(
    op: str,
    declared: Mapping[str, float | None],
    given: Mapping[str, float | np.ndarray] | None,
    left_ndim: int,
) -> dict[str, np.ndarray]:
    """Fill defaults and shape each arg to broadcast against left (bars last)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"{op} takes no argument {unknown[0]!r}")
    resolved: dict[str, np.ndarray] = {}
    for name, default in declared.items():
        value = given.get(name, default)
        if value is None:
            raise ValueError(f"{op} needs argument {name!r}")
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{op} argument {name!r} must be finite")
        # One value per condition: (n,) becomes (n, 1) so it lines up with
        # the condition axis, not the bars axis.
        if array.ndim >= 1 and array.shape[-1] != 1:
            array = array.reshape((*array.shape, 1))
        if array.ndim > left_ndim:
            raise ValueError(f"{op} argument {name!r} has too many dimensions")
        resolved[name] = array
    for name in ("bars", "pivot"):
        if name in resolved:
            count = resolved[name]
            if np.any(count < 1) or np.any(count != np.floor(count)):
                raise ValueError(f"{op} argument {name!r} must be a whole number >= 1")
    if "lookback" in resolved and np.any(resolved["lookback"] < 0):
        raise ValueError(f"{op} argument 'lookback' must be >= 0")
    return resolved


def _equal(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    tolerance = EQ_RELATIVE_TOLERANCE * np.maximum(1.0, np.abs(right))
    return np.abs(left - right) <= tolerance


def _rows(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`values` broadcast to `shape`, as contiguous rows x bars."""
    if values.shape == shape and values.ndim == 2 and values.flags.c_contiguous:
        return values  # a plan's stacked rows, as they come
    rows = math.prod(shape[:-1])
    return np.ascontiguousarray(np.broadcast_to(values, shape).reshape(rows, shape[-1]))


def _per_row(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One argument value per row of a left of `shape`."""
    if values.shape == (*shape[:-1], 1):
        return np.ascontiguousarray(values.reshape(-1))
    return np.ascontiguousarray(np.broadcast_to(values, (*shape[:-1], 1)).reshape(-1))


def _cross(op: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    fired = _cross_rows(
        _rows(left, left.shape),
        _rows(right, left.shape),
        op in ("crosses_above", "crosses"),
        op in ("crosses_below", "crosses"),
    )
    return fired.reshape(left.shape)


@njit(cache=True)
def _cross_rows(left: np.ndarray, right: np.ndarray, above: bool, below: bool) -> np.ndarray:
    # Bar 0 has no previous bar, so it never crosses.
    fired = np.zeros(left.shape, dtype=np.bool_)
    for row in range(left.shape[0]):
        for t in range(1, left.shape[1]):
            now_left, now_right = left[row, t], right[row, t]
            prev_left, prev_right = left[row, t - 1], right[row, t - 1]
            crossed = above and now_left > now_right and prev_left <= prev_right
            crossed = crossed or (below and now_left < now_right and prev_left >= prev_right)
            fired[row, t] = crossed
    return fired


_CHANNEL_KINDS = {
    "inside_channel": 0,
    "outside_channel": 1,
    "entering_channel": 2,
    "exiting_channel": 3,
}


def _channel(op: str, left: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    shape = left.shape
    fired = _channel_rows(
        _rows(left, shape), _rows(lower, shape), _rows(upper, shape), _CHANNEL_KINDS[op]
    )
    return fired.reshape(shape)


@njit(cache=True)
def _channel_rows(left: np.ndarray, lower: np.ndarray, upper: np.ndarray, kind: int) -> np.ndarray:
    # "outside" is not simply not inside: with a missing value it is
    # unknown, and unknown is false for every operator.
    fired = np.zeros(left.shape, dtype=np.bool_)
    for row in range(left.shape[0]):
        was_inside = False
        was_outside = False
        for t in range(left.shape[1]):
            value, low, high = left[row, t], lower[row, t], upper[row, t]
            present = not (np.isnan(value) or np.isnan(low) or np.isnan(high))
            inside = low <= value and value <= high
            outside = present and not inside
            if kind == 0:
                fired[row, t] = inside
            elif kind == 1:
                fired[row, t] = outside
            elif kind == 2:
                fired[row, t] = inside and was_outside
            else:
                fired[row, t] = outside and was_inside
            was_inside, was_outside = inside, outside
    return fired


_MOVE_KINDS = {"moving_up": 0, "moving_down": 1, "moving_up_pct": 2, "moving_down_pct": 3}


def _moving(op: str, left: np.ndarray, args: Mapping[str, np.ndarray]) -> np.ndarray:
    threshold = args["amount"] if op in ("moving_up", "moving_down") else args["pct"]
    fired = _moving_rows(
        _rows(left, left.shape),
        _per_row(args["bars"], left.shape).astype(np.int64),
        _per_row(threshold, left.shape),
        _MOVE_KINDS[op],
    )
    return fired.reshape(left.shape)


@njit(cache=True)
def _moving_rows(
    left: np.ndarray, bars: np.ndarray, threshold: np.ndarray, kind: int
) -> np.ndarray:
    # a[t-N] missing (t < N) or NaN compares false; a zero base has no
    # percentage change.
    fired = np.zeros(left.shape, dtype=np.bool_)
    for row in range(left.shape[0]):
        back, limit = bars[row], threshold[row]
        for t in range(back, left.shape[1]):
            now, then = left[row, t], left[row, t - back]
            if kind == 0:
                fired[row, t] = now - then >= limit
            elif kind == 1:
                fired[row, t] = then - now >= limit
            elif then != 0.0:
                if kind == 2:
                    fired[row, t] = (now - then) / then * 100.0 >= limit
                else:
                    fired[row, t] = (then - now) / then * 100.0 >= limit
    return fired


@njit(cache=True)
def _pivot_lows(low: np.ndarray, k: int) -> np.ndarray:
    """Bars that are pivot lows of width k (see the module docstring)."""
    n_bars = low.shape[0]
    pivots = np.zeros(n_bars, dtype=np.bool_)
    for centre in range(k, n_bars - k):
        value = low[centre]
        # A missing value anywhere in the windows compares false.
        is_pivot = not np.isnan(value)
        for i in range(centre - k, centre):
            if not value < low[i]:
                is_pivot = False
                break
        if is_pivot:
            for i in range(centre + 1, centre + k + 1):
                if not value <= low[i]:
                    is_pivot = False
                    break
        pivots[centre] = is_pivot
    return pivots


@njit(cache=True)
def _pivot_signals(
    signals: np.ndarray,
    price: np.ndarray,
    pivots: np.ndarray,
    indicator: np.ndarray,
    k: int,
    lookback: float,
    rule: int,
) -> None:
    """OR into `signals` (one row's bars) the signals of pivots of one type:
    rule 0 bullish (lows), 1 bearish (highs), 2 convergence."""
    previous = -1
    for current in range(pivots.size):
        if not pivots[current]:
            continue
        if previous >= 0 and current - previous <= lookback:
            price_rose = price[current] > price[previous]
            price_fell = price[current] < price[previous]
            rose = indicator[current] > indicator[previous]
            fell = indicator[current] < indicator[previous]
            if rule == 0:
                fired = price_fell and rose
            elif rule == 1:
                fired = price_rose and fell
            else:
                fired = (price_rose and rose) or (price_fell and fell)
            if fired:
                signals[current + k] = True
        previous = current


@njit(cache=True)
def _divergence_rows(
    indicator: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    pivot: np.ndarray,
    lookback: np.ndarray,
    use_lows: bool,
    use_highs: bool,
    convergence: bool,
) -> np.ndarray:
    fired = np.zeros(indicator.shape, dtype=np.bool_)
    negated_high = -high
    for row in range(indicator.shape[0]):
        k = pivot[row]
        if use_lows:
            rule = 2 if convergence else 0
            _pivot_signals(
                fired[row], low, _pivot_lows(low, k), indicator[row], k, lookback[row], rule
            )
        if use_highs:
            # Negation turns "strictly above / at or above" into the low rule.
            rule = 2 if convergence else 1
            pivots = _pivot_lows(negated_high, k)
            _pivot_signals(fired[row], high, pivots, indicator[row], k, lookback[row], rule)
    return fired


def _divergence(
    op: str,
    left: np.ndarray,
    args: Mapping[str, np.ndarray],
    high: np.ndarray | None,
    low: np.ndarray | None,
) -> np.ndarray:
    if high is None or low is None:
        raise ValueError(f"{op} needs the high and low price series")
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    n_bars = left.shape[-1]
    if high.shape != (n_bars,) or low.shape != (n_bars,):
        raise ValueError(f"{op}: high and low must be 1-D with {n_bars} bars")

    fired = _divergence_rows(
        _rows(left, left.shape),
        np.ascontiguousarray(high),
        np.ascontiguousarray(low),
        _per_row(args["pivot"], left.shape).astype(np.int64),
        _per_row(args["lookback"], left.shape),
        op in ("bullish_divergence", "divergence", "convergence"),
        op in ("bearish_divergence", "divergence", "convergence"),
        op == "convergence",
    )
    return fired.reshape(left.shape)


# The movement and divergence operators, as `unary_into` takes them.
UNARY = {
    "moving_up": 0,
    "moving_down": 1,
    "moving_up_pct": 2,
    "moving_down_pct": 3,
    "bullish_divergence": 4,
    "bearish_divergence": 5,
    "divergence": 6,
    "convergence": 7,
}


def unary_arguments(args: OperatorArgs, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A movement's (bars, threshold) or a divergence's (pivot, lookback),
    one value per row of a group of `rows` conditions, as `unary_into`
    takes them."""
    values = args.values
    if args.op in ("moving_up", "moving_down"):
        whole, amount = values["bars"], values["amount"]
    elif args.op in _MOVES:
        whole, amount = values["bars"], values["pct"]
    else:
        whole, amount = values["pivot"], values["lookback"]
    shape = (rows, 1)
    return _per_row(whole, shape).astype(np.int64), _per_row(amount, shape)


@njit(cache=True)
def unary_into(
    fired: np.ndarray,
    positions: np.ndarray,
    codes: np.ndarray,
    table: np.ndarray,
    left: np.ndarray,
    whole: np.ndarray,
    amount: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    columns: np.ndarray,
) -> None:
    """Row `positions[i]` of `fired` := operator `codes[i]` (see UNARY) over
    row `left[i]` of `table`, with `unary_arguments`' values `whole[i]` and
    `amount[i]` (and the prices `high` and `low` of the table's bars), at
    its columns `columns` (-1: no bar there, false)."""
    for i in range(codes.size):
        code = codes[i]
        values = table[left[i] : left[i] + 1]
        if code < 4:
            row = _moving_rows(values, whole[i : i + 1], amount[i : i + 1], code)[0]
        else:
            row = _divergence_rows(
                values,
                high,
                low,
                whole[i : i + 1],
                amount[i : i + 1],
                code != 5,
                code != 4,
                code == 7,
            )[0]
        for t in range(columns.size):
            fired[positions[i], t] = columns[t] >= 0 and row[columns[t]]


# Operators whose result at a bar reads that bar and at most the one before:
# a plan evaluates them all in one compiled call (`pointwise_into`).
POINTWISE = {
    "gt": 0,
    "gte": 1,
    "lt": 2,
    "lte": 3,
    "eq": 4,
    "crosses_above": 5,
    "crosses_below": 6,
    "crosses": 7,
    "inside_channel": 8,
    "outside_channel": 9,
    "entering_channel": 10,
    "exiting_channel": 11,
}


@njit(cache=True)
def _compared(code: int, left: float, right: float) -> bool:
    if code == 0:
        return left > right
    if code == 1:
        return left >= right
    if code == 2:
        return left < right
    if code == 3:
        return left <= right
    return abs(left - right) <= EQ_RELATIVE_TOLERANCE * max(1.0, abs(right))


@njit(cache=True)
def _channel_state(value: float, low: float, high: float) -> tuple[bool, bool]:
    """(inside, outside) as `_channel_rows` has them."""
    inside = low <= value and value <= high
    present = not (np.isnan(value) or np.isnan(low) or np.isnan(high))
    return inside, present and not inside


@njit(cache=True)
def pointwise_into(
    fired: np.ndarray,
    positions: np.ndarray,
    codes: np.ndarray,
    table: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    upper: np.ndarray,
    columns: np.ndarray,
) -> None:
    """Row `positions[i]` of `fired` := operator `codes[i]` (see POINTWISE)
    on rows `left[i]`, `right[i]` (a channel's lower) and `upper[i]` of
    `table`, at its columns `columns` (-1: no bar there, false). Column c - 1
    is the bar before c, and column 0 has none: what `apply_operator` gives
    at those bars over the table's rows."""
    for i in range(codes.size):
        code = codes[i]
        row = positions[i]
        for t in range(columns.size):
            now = columns[t]
            if now < 0:
                fired[row, t] = False
                continue
            before = now - 1
            value, other = table[left[i], now], table[right[i], now]
            if code <= 4:
                fired[row, t] = _compared(code, value, other)
            elif code <= 7:
                above = code != 6 and before >= 0
                below = code != 5 and before >= 0
                crossed = (
                    above and value > other and table[left[i], before] <= table[right[i], before]
                )
                crossed = crossed or (
                    below and value < other and table[left[i], before] >= table[right[i], before]
                )
                fired[row, t] = crossed
            else:
                inside, outside = _channel_state(value, other, table[upper[i], now])
                if code == 8:
                    fired[row, t] = inside
                elif code == 9:
                    fired[row, t] = outside
                elif before < 0:
                    fired[row, t] = False
                else:
                    was_inside, was_outside = _channel_state(
                        table[left[i], before], table[right[i], before], table[upper[i], before]
                    )
                    fired[row, t] = inside and was_outside if code == 10 else outside and was_inside
