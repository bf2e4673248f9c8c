"""Operators of CONDITIONS.md section 4, checked against plain loops over bars.

Each expectation below is written straight from the spec wording, one bar at
a time, and compared bar by bar with the vectorized apply_operator on real
Binance candles (with NaN warm-ups and holes, so the missing-input rule is
exercised).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from conditions.engine.operators import apply_operator

KLINES = Path(__file__).resolve().parent.parent / "data" / "klines"

COMPARISONS = ("gt", "gte", "lt", "lte", "eq")
CROSSES = ("crosses_above", "crosses_below", "crosses")
CHANNELS = ("inside_channel", "outside_channel", "entering_channel", "exiting_channel")
DIVERGENCES = ("bullish_divergence", "bearish_divergence", "divergence", "convergence")


def load_candles(name: str) -> dict[str, np.ndarray]:
    frame = pd.read_csv(KLINES / name)
    return {column: frame[column].to_numpy(dtype=np.float64) for column in frame.columns}


def with_holes(values: np.ndarray, holes: list[int]) -> np.ndarray:
    """A copy with missing bars, like an exchange gap in the middle of data."""
    holed = values.copy()
    holed[holes] = np.nan
    return holed


CANDLES = load_candles("ETHBTC-5m.csv")
CLOSE = CANDLES["close"]
HIGH = with_holes(CANDLES["high"], [2500, 4100])
LOW = with_holes(CANDLES["low"], [2501, 4100])
RSI = with_holes(talib.RSI(CLOSE, 14), [1000, 1001, 3333])
RSI_SMA = talib.SMA(RSI, 9)  # a NaN hole in RSI spreads over 9 bars here
CLOSE_SMA = talib.SMA(CLOSE, 20)
BB_UPPER, _, BB_LOWER = talib.BBANDS(CLOSE, 20, 2.0, 2.0)
MACD_HIST = talib.MACD(CLOSE, 12, 26, 9)[2]
PREVIOUS_CLOSE = np.concatenate([[np.nan], CLOSE[:-1]])


# --- expectations, one bar at a time, straight from the spec ------------------


def missing(*values: float) -> bool:
    return any(math.isnan(value) for value in values)


def expected_comparison(op: str, a: list[float], b: list[float]) -> list[bool]:
    out = []
    for t in range(len(a)):
        if missing(a[t], b[t]):
            out.append(False)
        elif op == "gt":
            out.append(a[t] > b[t])
        elif op == "gte":
            out.append(a[t] >= b[t])
        elif op == "lt":
            out.append(a[t] < b[t])
        elif op == "lte":
            out.append(a[t] <= b[t])
        else:
            out.append(abs(a[t] - b[t]) <= 1e-9 * max(1.0, abs(b[t])))
    return out


def expected_cross(op: str, a: list[float], b: list[float]) -> list[bool]:
    out = []
    for t in range(len(a)):
        if t == 0 or missing(a[t], b[t], a[t - 1], b[t - 1]):
            out.append(False)
            continue
        above = a[t] > b[t] and a[t - 1] <= b[t - 1]
        below = a[t] < b[t] and a[t - 1] >= b[t - 1]
        out.append({"crosses_above": above, "crosses_below": below, "crosses": above or below}[op])
    return out


def expected_channel(op: str, a: list[float], lower: list[float], upper: list[float]) -> list[bool]:
    def known(t: int) -> bool:
        return not missing(a[t], lower[t], upper[t])

    def inside(t: int) -> bool:
        return lower[t] <= a[t] <= upper[t]

    out = []
    for t in range(len(a)):
        if op == "inside_channel":
            out.append(known(t) and inside(t))
        elif op == "outside_channel":
            out.append(known(t) and not inside(t))
        elif t == 0 or not known(t) or not known(t - 1):
            out.append(False)
        elif op == "entering_channel":
            out.append(inside(t) and not inside(t - 1))
        else:
            out.append(not inside(t) and inside(t - 1))
    return out


def expected_moving(op: str, a: list[float], bars: int, threshold: float) -> list[bool]:
    out = []
    for t in range(len(a)):
        if t < bars or missing(a[t], a[t - bars]):
            out.append(False)
        elif op == "moving_up":
            out.append(a[t] - a[t - bars] >= threshold)
        elif op == "moving_down":
            out.append(a[t - bars] - a[t] >= threshold)
        elif a[t - bars] == 0:
            out.append(False)
        elif op == "moving_up_pct":
            out.append((a[t] - a[t - bars]) / a[t - bars] * 100 >= threshold)
        else:
            out.append((a[t - bars] - a[t]) / a[t - bars] * 100 >= threshold)
    return out


def is_pivot(price: list[float], i: int, k: int, kind: str) -> bool:
    if i - k < 0 or i + k > len(price) - 1:
        return False
    if missing(*price[i - k : i + k + 1]):
        return False
    if kind == "low":
        return all(price[i] < price[j] for j in range(i - k, i)) and all(
            price[i] <= price[j] for j in range(i + 1, i + k + 1)
        )
    return all(price[i] > price[j] for j in range(i - k, i)) and all(
        price[i] >= price[j] for j in range(i + 1, i + k + 1)
    )


def expected_divergence(
    op: str, ind: list[float], high: list[float], low: list[float], k: int, lookback: float
) -> list[bool]:
    kinds = {
        "bullish_divergence": ("low",),
        "bearish_divergence": ("high",),
        "divergence": ("low", "high"),
        "convergence": ("low", "high"),
    }[op]
    out = []
    for t in range(len(ind)):
        fired = False
        p2 = t - k  # the only pivot that can be confirmed at bar t
        for kind in kinds:
            price = low if kind == "low" else high
            if p2 < 0 or not is_pivot(price, p2, k, kind):
                continue
            earlier = (
                j for j in range(p2 - 1, -1, -1) if j + k <= t and is_pivot(price, j, k, kind)
            )
            p1 = next(earlier, None)
            if p1 is None:
                continue
            if p2 - p1 > lookback or missing(ind[p1], ind[p2]):
                continue
            price_up, price_down = price[p2] > price[p1], price[p2] < price[p1]
            ind_up, ind_down = ind[p2] > ind[p1], ind[p2] < ind[p1]
            if op == "convergence":
                fired |= (price_up and ind_up) or (price_down and ind_down)
            elif kind == "low":
                fired |= price_down and ind_up
            else:
                fired |= price_up and ind_down
        out.append(fired)
    return out


def assert_same_bars(actual: np.ndarray, expected: list[bool]) -> None:
    assert actual.dtype == bool
    assert actual.shape == (len(expected),)
    mismatches = np.flatnonzero(actual != np.array(expected, dtype=bool))
    assert mismatches.size == 0, f"first mismatching bars: {mismatches[:10].tolist()}"


def assert_some_true_some_false(expected: list[bool]) -> None:
    # Guards against comparing two all-false answers, which would prove nothing.
    assert any(expected) and not all(expected)


# --- whole series against the loops ---------------------------------------------

VALUE_PAIRS = {
    "rsi_vs_50": (RSI, np.full_like(RSI, 50.0)),
    "rsi_vs_its_sma": (RSI, RSI_SMA),
    "close_vs_sma": (CLOSE, CLOSE_SMA),
    "close_vs_previous_close": (CLOSE, PREVIOUS_CLOSE),
}


@pytest.mark.parametrize("pair", VALUE_PAIRS)
@pytest.mark.parametrize("op", COMPARISONS + CROSSES)
def test_it_matches_the_spec_loop_for_comparisons_and_crosses(op: str, pair: str) -> None:
    a, b = VALUE_PAIRS[pair]
    loop = expected_cross if op in CROSSES else expected_comparison
    expected = loop(op, a.tolist(), b.tolist())
    if not (op == "eq" and pair != "close_vs_previous_close"):
        assert_some_true_some_false(expected)
    assert_same_bars(apply_operator(op, a, b), expected)


def test_it_finds_unchanged_closes_equal_and_skips_the_first_bar() -> None:
    equal = apply_operator("eq", CLOSE, PREVIOUS_CLOSE)
    assert not equal[0]
    assert equal.sum() > 100  # flat 5m candles are common on ETHBTC


@pytest.mark.parametrize("op", CHANNELS)
def test_it_matches_the_spec_loop_for_channels(op: str) -> None:
    close = with_holes(CLOSE, [1500, 2700])
    expected = expected_channel(op, close.tolist(), BB_LOWER.tolist(), BB_UPPER.tolist())
    assert_some_true_some_false(expected)
    assert_same_bars(apply_operator(op, close, (BB_LOWER, BB_UPPER)), expected)


MOVES = [
    ("moving_up", RSI, 3, 5.0),
    ("moving_down", RSI, 1, 2.5),
    ("moving_up", CLOSE, 12, 0.0004),
    ("moving_down", MACD_HIST, 5, 0.0),
    ("moving_up_pct", CLOSE, 12, 1.0),
    ("moving_down_pct", CLOSE, 3, 0.5),
    ("moving_up_pct", MACD_HIST, 2, 30.0),  # negative bases: the literal formula
    ("moving_down_pct", MACD_HIST, 1, 10.0),
]


@pytest.mark.parametrize(("op", "series", "bars", "threshold"), MOVES)
def test_it_matches_the_spec_loop_for_movement(
    op: str, series: np.ndarray, bars: int, threshold: float
) -> None:
    arg = "pct" if op.endswith("_pct") else "amount"
    expected = expected_moving(op, series.tolist(), bars, threshold)
    assert_some_true_some_false(expected)
    actual = apply_operator(op, series, None, {"bars": float(bars), arg: threshold})
    assert_same_bars(actual, expected)


@pytest.mark.parametrize(("k", "lookback"), [(3, 60), (5, 25), (1, 10)])
@pytest.mark.parametrize("op", DIVERGENCES)
def test_it_matches_the_spec_loop_for_divergences(op: str, k: int, lookback: int) -> None:
    expected = expected_divergence(op, RSI.tolist(), HIGH.tolist(), LOW.tolist(), k, lookback)
    assert_some_true_some_false(expected)
    actual = apply_operator(
        op, RSI, None, {"pivot": float(k), "lookback": float(lookback)}, high=HIGH, low=LOW
    )
    assert_same_bars(actual, expected)


def test_it_uses_pivot_3_and_lookback_60_by_default() -> None:
    by_default = apply_operator("divergence", RSI, None, high=HIGH, low=LOW)
    explicit = apply_operator(
        "divergence", RSI, None, {"pivot": 3.0, "lookback": 60.0}, high=HIGH, low=LOW
    )
    assert np.array_equal(by_default, explicit)
    assert by_default.any()


# Small integer series have many ties, which is where the pivot and
# convergence rules about equal values matter.
def small_series(n_bars: int, with_missing: bool) -> st.SearchStrategy[list[float]]:
    value = st.integers(0, 6).map(float)
    if with_missing:
        value = st.one_of(value, st.just(math.nan))
    return st.lists(value, min_size=n_bars, max_size=n_bars)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    n_bars=st.integers(0, 60),
    k=st.integers(1, 4),
    lookback=st.integers(0, 30),
)
def test_it_matches_the_spec_loop_on_random_series_with_ties(
    data: st.DataObject, n_bars: int, k: int, lookback: int
) -> None:
    low = data.draw(small_series(n_bars, with_missing=True))
    spread = data.draw(small_series(n_bars, with_missing=False))
    high = [bottom + extra for bottom, extra in zip(low, spread, strict=True)]
    indicator = data.draw(small_series(n_bars, with_missing=True))
    args = {"pivot": float(k), "lookback": float(lookback)}
    ind_array, high_array, low_array = np.array(indicator), np.array(high), np.array(low)
    for op in DIVERGENCES:
        expected = expected_divergence(op, indicator, high, low, k, lookback)
        actual = apply_operator(op, ind_array, None, args, high=high_array, low=low_array)
        assert_same_bars(actual, expected)
    for op in COMPARISONS + CROSSES:
        loop = expected_cross if op in CROSSES else expected_comparison
        expected = loop(op, indicator, low)
        assert_same_bars(apply_operator(op, ind_array, low_array), expected)


# --- many conditions at once --------------------------------------------------


def test_it_gives_each_row_of_a_stacked_call_the_answer_of_its_own_call() -> None:
    thresholds = np.linspace(20.0, 80.0, 13)
    left = np.tile(RSI, (thresholds.size, 1))
    for op in COMPARISONS + CROSSES:
        stacked = apply_operator(op, left, thresholds[:, None])
        assert stacked.shape == left.shape
        for row, threshold in enumerate(thresholds):
            assert np.array_equal(stacked[row], apply_operator(op, RSI, np.float64(threshold)))
    assert apply_operator("crosses", left, thresholds[:, None]).any(axis=1).all()


def test_it_stacks_different_series_against_different_series() -> None:
    lengths = [5, 9, 14, 21, 30]
    lefts = np.vstack([talib.RSI(CLOSE, length) for length in lengths])
    rights = np.vstack([talib.SMA(row, 9) for row in lefts])
    for op in COMPARISONS + CROSSES:
        stacked = apply_operator(op, lefts, rights)
        for row in range(len(lengths)):
            assert np.array_equal(stacked[row], apply_operator(op, lefts[row], rights[row]))


def test_it_stacks_channels_with_per_condition_bounds() -> None:
    lowers = np.array([[20.0], [30.0], [40.0]])
    uppers = np.array([[80.0], [70.0], [60.0]])
    left = np.tile(RSI, (3, 1))
    for op in CHANNELS:
        stacked = apply_operator(op, left, (lowers, uppers))
        for row in range(3):
            single = apply_operator(op, RSI, (lowers[row, 0], uppers[row, 0]))
            assert np.array_equal(stacked[row], single)
            assert single.any()


@pytest.mark.parametrize("args_shape", ["flat", "column"])
def test_it_applies_per_condition_movement_args_row_by_row(args_shape: str) -> None:
    bars = np.array([1.0, 2.0, 5.0, 12.0])
    pcts = np.array([0.2, 0.5, 1.0, 1.5])
    amounts = np.array([1.0, 3.0, 5.0, 8.0])
    if args_shape == "column":
        bars, pcts, amounts = bars[:, None], pcts[:, None], amounts[:, None]
    left = np.vstack([CLOSE, CLOSE, RSI, RSI])
    for op in ("moving_up", "moving_down", "moving_up_pct", "moving_down_pct"):
        value_arg = {"pct": pcts} if op.endswith("_pct") else {"amount": amounts}
        stacked = apply_operator(op, left, None, {"bars": bars, **value_arg})
        for row in range(4):
            single_args = {"bars": float(bars.flat[row])}
            single_args.update({name: float(v.flat[row]) for name, v in value_arg.items()})
            assert np.array_equal(stacked[row], apply_operator(op, left[row], None, single_args))


def test_it_applies_per_condition_divergence_args_row_by_row() -> None:
    lengths = [7, 14, 14, 21]
    left = np.vstack([with_holes(talib.RSI(CLOSE, length), [3333]) for length in lengths])
    args = {"pivot": np.array([2.0, 3.0, 5.0, 3.0]), "lookback": np.array([40.0, 60.0, 30.0, 90.0])}
    for op in DIVERGENCES:
        stacked = apply_operator(op, left, None, args, high=HIGH, low=LOW)
        for row in range(len(lengths)):
            single_args = {name: float(values[row]) for name, values in args.items()}
            single = apply_operator(op, left[row], None, single_args, high=HIGH, low=LOW)
            assert np.array_equal(stacked[row], single)
            assert single.any()


# --- no look-ahead ------------------------------------------------------------

LOOKAHEAD_CASES = (
    [(op, RSI, RSI_SMA, None) for op in COMPARISONS + CROSSES]
    + [(op, CLOSE, (BB_LOWER, BB_UPPER), None) for op in CHANNELS]
    + [("moving_up", RSI, None, {"bars": 3.0, "amount": 4.0})]
    + [("moving_down_pct", CLOSE, None, {"bars": 6.0, "pct": 0.5})]
    + [(op, RSI, None, {"pivot": 3.0, "lookback": 60.0}) for op in DIVERGENCES]
)


def truncated(value: object, cut: int) -> object:
    if isinstance(value, tuple):
        return tuple(part[:cut] for part in value)
    return value[:cut] if isinstance(value, np.ndarray) else value


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=1, max_value=CLOSE.size))
def test_it_answers_bar_t_the_same_without_the_bars_after_t(cut: int) -> None:
    for op, left, right, args in LOOKAHEAD_CASES:
        prices = {"high": HIGH, "low": LOW} if op in DIVERGENCES else {}
        full = apply_operator(op, left, right, args, **prices)
        short_prices = {name: values[:cut] for name, values in prices.items()}
        short = apply_operator(op, left[:cut], truncated(right, cut), args, **short_prices)
        assert np.array_equal(short, full[:cut]), op


# --- edge cases a trader would notice -------------------------------------------


def test_it_counts_a_cross_from_equality_at_the_previous_bar() -> None:
    a = np.array([1.0, 1.0, 2.0, 2.0, 1.0])
    b = np.array([1.0, 1.0, 1.0, 2.0, 2.0])
    assert apply_operator("crosses_above", a, b).tolist() == [False, False, True, False, False]
    assert apply_operator("crosses_below", a, b).tolist() == [False, False, False, False, True]


def test_it_does_not_call_touching_the_level_a_cross() -> None:
    a = np.array([29.0, 30.0, 29.0, 30.0, 31.0])
    assert apply_operator("crosses_above", a, np.float64(30.0)).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]


def test_it_never_crosses_on_the_first_bar_or_next_to_a_missing_value() -> None:
    a = np.array([5.0, 1.0, np.nan, 5.0, 1.0])
    assert apply_operator("crosses", a, np.float64(3.0)).tolist() == [
        False,
        True,
        False,
        False,
        True,
    ]


def test_it_counts_a_touch_of_the_channel_boundary_as_inside() -> None:
    a = np.array([-1.0, 0.0, 5.0, 10.0, 10.5, 10.0])
    channel = (np.float64(0.0), np.float64(10.0))
    assert apply_operator("inside_channel", a, channel).tolist() == [
        False,
        True,
        True,
        True,
        False,
        True,
    ]
    assert apply_operator("entering_channel", a, channel).tolist() == [
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert apply_operator("exiting_channel", a, channel).tolist() == [
        False,
        False,
        False,
        False,
        True,
        False,
    ]


def test_it_is_neither_inside_nor_outside_a_channel_with_a_missing_band() -> None:
    a = np.array([5.0, 5.0])
    channel = (np.array([0.0, np.nan]), np.array([1.0, 10.0]))
    assert apply_operator("outside_channel", a, channel).tolist() == [True, False]
    assert apply_operator("inside_channel", a, channel).tolist() == [False, False]


def test_it_treats_values_within_a_billionth_as_equal() -> None:
    small = np.array([0.05 + 5e-10, 0.05 + 2e-9])
    assert apply_operator("eq", small, np.float64(0.05)).tolist() == [True, False]
    large = np.array([1e6 + 5e-4, 1e6 + 2e-3])
    assert apply_operator("eq", large, np.float64(1e6)).tolist() == [True, False]


def test_it_has_no_percentage_move_from_zero() -> None:
    a = np.array([0.0, 1.0, 2.0, 1.0])
    up = apply_operator("moving_up_pct", a, None, {"bars": 1.0, "pct": 10.0})
    down = apply_operator("moving_down_pct", a, None, {"bars": 1.0, "pct": 10.0})
    assert up.tolist() == [False, False, True, False]
    assert down.tolist() == [False, False, False, True]


def test_it_moves_over_n_bars_not_one() -> None:
    a = np.array([10.0, 11.0, 12.0, 13.0, 12.5])
    up = apply_operator("moving_up", a, None, {"bars": 3.0, "amount": 3.0})
    assert up.tolist() == [False, False, False, True, False]


def bullish_setup(low_values: list[float], indicator_values: list[float]) -> list[bool]:
    low = np.array(low_values)
    high = low + 1.0
    args = {"pivot": 2.0, "lookback": 60.0}
    signal = apply_operator(
        "bullish_divergence", np.array(indicator_values), None, args, high=high, low=low
    )
    return signal.tolist()


def test_it_fires_bullish_divergence_when_the_pivot_is_confirmed_not_before() -> None:
    # Pivot lows at bar 2 (low 2, RSI 20) and bar 7 (low 1, RSI 30).
    low = [5, 4, 2, 4, 5, 4, 3, 1, 3, 4, 5]
    rsi = [50, 40, 20, 40, 50, 40, 35, 30, 40, 50, 55]
    fired = bullish_setup(low, rsi)
    assert [t for t, hit in enumerate(fired) if hit] == [9]


def test_it_counts_a_pivot_with_an_equal_low_to_its_right() -> None:
    low = [5, 4, 2, 4, 5, 4, 3, 1, 1, 4, 5]
    rsi = [50, 40, 20, 40, 50, 40, 35, 30, 25, 50, 55]
    # Bar 7 is the pivot (bar 8 only equals it); confirmed at bar 9.
    assert [t for t, hit in enumerate(bullish_setup(low, rsi)) if hit] == [9]


def test_it_does_not_count_a_pivot_with_an_equal_low_to_its_left() -> None:
    low = [5, 4, 2, 4, 5, 4, 3, 1, 1, 4, 5]
    # Only bar 8 shows a higher RSI than bar 2; bar 8 is not a pivot because
    # the equal low at bar 7 is on its left, so nothing fires.
    rsi = [50, 40, 20, 40, 50, 40, 35, 15, 30, 50, 55]
    assert not any(bullish_setup(low, rsi))


def test_it_ignores_a_previous_pivot_beyond_the_lookback() -> None:
    low = np.array([5, 4, 2, 4, 5, 4, 3, 1, 3, 4, 5], dtype=float)
    rsi = np.array([50, 40, 20, 40, 50, 40, 35, 30, 40, 50, 55], dtype=float)
    for lookback, fires in ((5.0, True), (4.0, False)):
        args = {"pivot": 2.0, "lookback": lookback}
        signal = apply_operator("bullish_divergence", rsi, None, args, high=low + 1, low=low)
        assert bool(signal.any()) is fires


def test_it_needs_the_indicator_at_both_pivots() -> None:
    low = [5, 4, 2, 4, 5, 4, 3, 1, 3, 4, 5]
    rsi = [50, 40, math.nan, 40, 50, 40, 35, 30, 40, 50, 55]
    assert not any(bullish_setup(low, rsi))


def test_it_reads_convergence_as_price_and_indicator_moving_the_same_way() -> None:
    low = np.array([5, 4, 2, 4, 5, 4, 3, 1, 3, 4, 5], dtype=float)
    high = low + 1.0
    args = {"pivot": 2.0, "lookback": 60.0}
    both_lower = np.array([50, 40, 20, 40, 50, 40, 35, 10, 40, 50, 55], dtype=float)
    flat_indicator = np.array([50, 40, 20, 40, 50, 40, 35, 20, 40, 50, 55], dtype=float)
    lower_low_higher_rsi = np.array([50, 40, 20, 40, 50, 40, 35, 30, 40, 50, 55], dtype=float)
    converging = apply_operator("convergence", both_lower, None, args, high=high, low=low)
    assert np.flatnonzero(converging).tolist() == [9]
    assert not apply_operator("convergence", flat_indicator, None, args, high=high, low=low).any()
    assert not apply_operator(
        "convergence", lower_low_higher_rsi, None, args, high=high, low=low
    ).any()


@pytest.mark.parametrize(
    ("op", "right", "args"),
    [
        ("greater", np.float64(1.0), None),
        (">", np.float64(1.0), None),
        ("gt", None, None),
        ("inside_channel", np.float64(1.0), None),
        ("moving_up", None, {"bars": 1.0}),
        ("moving_up", None, {"bars": 1.5, "amount": 1.0}),
        ("moving_up", None, {"bars": 0.0, "amount": 1.0}),
        ("moving_up", None, {"bars": 1.0, "amount": 1.0, "typo": 2.0}),
        ("moving_up", np.float64(1.0), {"bars": 1.0, "amount": 1.0}),
        ("divergence", None, None),
    ],
)
def test_it_rejects_a_malformed_call(op: str, right: object, args: dict | None) -> None:
    with pytest.raises(ValueError):
        apply_operator(op, np.array([1.0, 2.0, 3.0]), right, args)
