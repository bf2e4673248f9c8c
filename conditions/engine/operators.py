"""The operators of the condition language (CONDITIONS.md section 4), vectorized.

Every operator takes float64 series where NaN means "missing" and answers a
bool per bar. Series are 1-D (bars) or N-D with bars on the last axis, so the
evaluation plan can stack many conditions that share an operator (one per row)
and evaluate them in one call. Comparison, equality, cross, channel and
movement operators are pure array expressions: no Python loop per bar or per
condition.

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

from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


def apply_operator(
    op: str,
    left: np.ndarray,
    right: Right,
    args: Mapping[str, float | np.ndarray] | None = None,
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
    catalog defaults. Divergence operators also need ``high`` and ``low``, the
    1-D price series of the same candles.

    Raises ValueError on an unknown operator, a wrong right-hand side, or an
    invalid or missing argument.
    """
    spec = OPERATORS.get(op)
    if spec is None:
        raise ValueError(f"unknown operator {op!r} (expected a canonical name)")
    left = np.asarray(left, dtype=np.float64)
    if left.ndim == 0:
        raise ValueError("left must have a bars axis")
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


def _cross(op: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    # Bar 0 has no previous bar, so it never crosses; slicing instead of
    # shifting avoids two full-size copies on the stacked fast path.
    result = np.zeros(left.shape, dtype=bool)
    now_left, now_right = left[..., 1:], right[..., 1:]
    prev_left, prev_right = left[..., :-1], right[..., :-1]
    if op in ("crosses_above", "crosses"):
        result[..., 1:] |= (now_left > now_right) & (prev_left <= prev_right)
    if op in ("crosses_below", "crosses"):
        result[..., 1:] |= (now_left < now_right) & (prev_left >= prev_right)
    return result


def _channel(op: str, left: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    # "outside" is not simply ~inside: with a missing value it is unknown,
    # and unknown is false for every operator.
    present = ~(np.isnan(left) | np.isnan(lower) | np.isnan(upper))
    inside = (lower <= left) & (left <= upper)
    outside = present & ~inside
    if op == "inside_channel":
        return inside
    if op == "outside_channel":
        return outside
    was_inside = np.zeros(left.shape, dtype=bool)
    was_outside = np.zeros(left.shape, dtype=bool)
    was_inside[..., 1:] = inside[..., :-1]
    was_outside[..., 1:] = outside[..., :-1]
    if op == "entering_channel":
        return inside & was_outside
    return outside & was_inside


def _moving(op: str, left: np.ndarray, args: Mapping[str, np.ndarray]) -> np.ndarray:
    bars = args["bars"].astype(np.int64)
    n_bars = left.shape[-1]
    # Gather a[t-N] with one index array so per-condition N needs no loop.
    source_index = np.arange(n_bars) - bars
    has_past = np.broadcast_to(source_index >= 0, left.shape)
    index = np.broadcast_to(np.maximum(source_index, 0), left.shape)
    then = np.where(has_past, np.take_along_axis(left, index, axis=-1), np.nan)

    with np.errstate(divide="ignore", invalid="ignore"):
        if op == "moving_up":
            return left - then >= args["amount"]
        if op == "moving_down":
            return then - left >= args["amount"]
        # A zero base has no percentage change; NaN makes the test false.
        base = np.where(then == 0.0, np.nan, then)
        change_pct = (left - base) / base * 100.0
        if op == "moving_up_pct":
            return change_pct >= args["pct"]
        return (base - left) / base * 100.0 >= args["pct"]


def _pivot_lows(low: np.ndarray, k: int) -> np.ndarray:
    """Bars that are pivot lows of width k (see the module docstring)."""
    n_bars = low.shape[0]
    pivots = np.zeros(n_bars, dtype=bool)
    if n_bars < 2 * k + 1:
        return pivots
    windows = sliding_window_view(low, 2 * k + 1)
    centre = windows[:, k]
    # min() of a window with a NaN is NaN, and NaN compares false.
    left_min = windows[:, :k].min(axis=1)
    right_min = windows[:, k + 1 :].min(axis=1)
    pivots[k : n_bars - k] = (centre < left_min) & (centre <= right_min)
    return pivots


def _pivot_signals(
    op: str,
    price: np.ndarray,
    pivots: np.ndarray,
    indicator: np.ndarray,
    k: int,
    lookback: np.ndarray,
    kind: str,
) -> np.ndarray:
    """Bool (rows, bars): signal of ``op`` from pivots of one type (kind low/high)."""
    signals = np.zeros(indicator.shape, dtype=bool)
    bars = np.flatnonzero(pivots)
    if bars.size < 2:
        return signals
    p1, p2 = bars[:-1], bars[1:]
    price_rose = price[p2] > price[p1]
    price_fell = price[p2] < price[p1]
    ind_rose = indicator[:, p2] > indicator[:, p1]
    ind_fell = indicator[:, p2] < indicator[:, p1]
    if op == "convergence":
        fired = (price_rose & ind_rose) | (price_fell & ind_fell)
    elif kind == "low":
        fired = price_fell & ind_rose
    else:
        fired = price_rose & ind_fell
    fired &= (p2 - p1) <= lookback
    signals[:, p2 + k] = fired
    return signals


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

    rows = int(np.prod(left.shape[:-1]))
    indicator = left.reshape(rows, n_bars)
    per_row = {
        name: np.broadcast_to(args[name], (*left.shape[:-1], 1)).reshape(rows)
        for name in ("pivot", "lookback")
    }
    use_lows = op in ("bullish_divergence", "divergence", "convergence")
    use_highs = op in ("bearish_divergence", "divergence", "convergence")
    result = np.zeros(indicator.shape, dtype=bool)
    # Pivots depend only on prices and k, so rows sharing a k share them.
    for k_value in np.unique(per_row["pivot"]):
        k = int(k_value)
        selected = per_row["pivot"] == k_value
        lookback = per_row["lookback"][selected][:, None]
        block = indicator[selected]
        signals = np.zeros(block.shape, dtype=bool)
        if use_lows:
            pivots = _pivot_lows(low, k)
            signals |= _pivot_signals(op, low, pivots, block, k, lookback, "low")
        if use_highs:
            # Negation turns "strictly above / at or above" into the low rule.
            pivots = _pivot_lows(-high, k)
            signals |= _pivot_signals(op, high, pivots, block, k, lookback, "high")
        result[selected] = signals
    return result.reshape(left.shape)
