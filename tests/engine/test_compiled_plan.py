"""The compiled calls a plan makes per timeframe, against the functions they
stand for, and the pair evaluator over candles that move on, bar by bar.

- `tails_into` (every indicator of a timeframe in one call) against
  `compute_indicator`, and MACD's three EMAs in one pass against three
  `seeded_ema`s;
- `candle_arrays` (a frame in one conversion) against its columns;
- `pointwise_into` and `unary_into` (every operator of a timeframe in two
  calls) against `apply_operator`, over NaNs and bars with no value;
- the pair evaluator, kept from one bar to the next over a real klines
  file, against a plan made afresh, also when the history it is given is
  not the continuation of the one before, and as conditions leave it (its
  plan kept until more than a quarter of it has gone) or arrive;
- a run's values read as columns (what the registry's cache rows are written
  from) against each condition's own series.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conditions.bench.scenario import generated_scenario, normalized
from conditions.engine.candles import load_candles
from conditions.engine.catalog import INDICATORS
from conditions.engine.indicator_loops import macd_lines, seeded_ema, tails_into
from conditions.engine.indicators import (
    IndicatorSpec,
    candle_arrays,
    candle_prices,
    compute_indicator,
)
from conditions.engine.live import PairEvaluator
from conditions.engine.operators import (
    POINTWISE,
    UNARY,
    apply_operator,
    pointwise_into,
    prepare_args,
    unary_arguments,
    unary_into,
)
from conditions.engine.plan import (
    CHANNEL,
    NO_RIGHT,
    VALUE,
    EvaluationPlan,
    series_columns,
)
from conditions.engine.playbook import alert_signal
from tests.conftest import KLINES_DIR
from tests.engine.test_indicators import CASES, case_id


def same_bits(expected: np.ndarray, actual: np.ndarray) -> bool:
    return expected.shape == actual.shape and np.array_equal(expected, actual, equal_nan=True)


@pytest.fixture(scope="module")
def ethbtc() -> pd.DataFrame:
    return load_candles(KLINES_DIR / "ETHBTC-5m.csv")


# --- indicators ------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 120, 30, 3])
def test_tails_into_writes_the_end_of_every_indicator(ethbtc, size) -> None:
    # Given every indicator case over the same candles, each with its own tail
    candles = ethbtc.iloc[:size].reset_index(drop=True)
    specs = [IndicatorSpec.of(name, params) for name, params in CASES]
    tails = np.array([[1, 2, 17, 64, 5000][i % 5] for i in range(len(specs))], dtype=np.int64)
    tails = np.minimum(tails, size)
    width = int(tails.max()) + 3
    rows = np.full((len(specs), 5), -1, dtype=np.int64)
    outputs = []
    for index, spec in enumerate(specs):
        for position, output in enumerate(INDICATORS[spec.name].outputs):
            if (index + position) % 4 != 3:  # some outputs not wanted
                rows[index, position] = len(outputs)
                outputs.append((index, output))
    table = np.zeros((len(outputs), width))
    numbers = [spec.numbers() for spec in specs]

    # When one call computes them all
    tails_into(
        table,
        candle_prices(candles),
        np.array([spec.kind for spec in specs], dtype=np.int64),
        np.array([whole for whole, _ in numbers], dtype=np.int64),
        np.array([std for _, std in numbers]),
        np.array([spec.warmup for spec in specs], dtype=np.int64),
        tails,
        rows,
    )

    # Then each row ends with the indicator's last values, NaN before them
    for row, (index, output) in enumerate(outputs):
        spec, tail = specs[index], int(tails[index])
        full = compute_indicator(candles, spec.name, spec.params)[output]
        expected = np.concatenate((np.full(width - tail, np.nan), full[size - tail :]))
        assert same_bits(expected, table[row]), f"{case_id(CASES[index])} {output}"


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(0, 90),
    lengths=st.lists(st.integers(1, 30), min_size=2, max_size=2),
    signal=st.integers(1, 15),
    gap=st.booleans(),
)
def test_macd_lines_are_three_seeded_emas(seed, size, lengths, signal, gap) -> None:
    # Given closes, one of them missing or not, and MACD lengths
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(size=size))
    if gap and size:
        close[rng.integers(size)] = np.nan
    fast, slow = sorted(lengths)

    # When the three EMAs run in one pass
    line, signal_line, histogram = macd_lines(close, fast, slow, signal)

    # Then they are TA-Lib's: the fast EMA seeded where the slow one starts,
    # the signal on the line from there
    slow_ema = seeded_ema(close, slow)
    fast_ema = np.full(size, np.nan)
    fast_ema[slow - fast :] = seeded_ema(close[slow - fast :], fast)
    expected_line = fast_ema - slow_ema
    expected_signal = np.full(size, np.nan)
    expected_signal[slow - 1 :] = seeded_ema(expected_line[slow - 1 :], signal)
    assert same_bits(expected_line, line)
    assert same_bits(expected_signal, signal_line)
    assert same_bits(expected_line - expected_signal, histogram)


@pytest.mark.parametrize("reordered", [False, True])
def test_candle_arrays_are_the_frames_columns(ethbtc, reordered) -> None:
    candles = ethbtc.iloc[:500]
    if reordered:
        candles = candles[["close", "open_time", "volume", "low", "high", "open"]]

    open_time, prices = candle_arrays(candles)

    expected = candles["open_time"].to_numpy()
    assert open_time.dtype == np.int64 and np.array_equal(open_time, expected)
    assert prices.flags.c_contiguous and same_bits(candle_prices(candles), prices)


# --- operators ---------------------------------------------------------------------


def random_table(seed: int, rows: int, width: int) -> np.ndarray:
    """Values on a coarse grid (ties and equal neighbours happen), some NaN."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 6, (rows, width)).astype(np.float64) / 2
    table[rng.random((rows, width)) < 0.1] = np.nan
    return table


@st.composite
def column_maps(draw: st.DrawFn, width: int) -> np.ndarray:
    """The table column of each bar evaluated, -1 where there is none: the
    last bars of the table, or another timeframe's bars, repeated."""
    if draw(st.booleans()):
        count = draw(st.integers(0, width))
        return np.arange(width - count, width, dtype=np.int64)
    values = draw(st.lists(st.integers(-1, width - 1), max_size=12))
    return np.array(sorted(values), dtype=np.int64)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 40), data=st.data())
def test_pointwise_into_gives_what_apply_operator_gives(seed, width, data) -> None:
    table = random_table(seed, 6, width)
    columns = data.draw(column_maps(width))
    ops = list(POINTWISE)
    channel = {"inside_channel", "outside_channel", "entering_channel", "exiting_channel"}
    left = np.array([i % 6 for i in range(len(ops))], dtype=np.int64)
    right = np.array([(i + 1) % 6 for i in range(len(ops))], dtype=np.int64)
    upper = np.array([(i + 2) % 6 if op in channel else -1 for i, op in enumerate(ops)])
    fired = np.ones((len(ops) + 1, len(columns)), dtype=bool)
    positions = np.arange(1, len(ops) + 1, dtype=np.int64)

    pointwise_into(
        fired,
        positions,
        np.array([POINTWISE[op] for op in ops], dtype=np.int64),
        table,
        left,
        right,
        upper,
        columns,
    )

    for i, op in enumerate(ops):
        side = (table[right[i]], table[upper[i]]) if op in channel else table[right[i]]
        expected = apply_operator(op, table[left[i]], side)
        on_bars = np.where(columns >= 0, expected[np.maximum(columns, 0)], False)
        assert fired[positions[i]].tolist() == on_bars.tolist(), op
    assert fired[0].all()


UNARY_ARGS = {
    "moving_up": {"bars": 2.0, "amount": 0.5},
    "moving_down": {"bars": 1.0, "amount": 0.0},
    "moving_up_pct": {"bars": 3.0, "pct": 10.0},
    "moving_down_pct": {"bars": 1.0, "pct": 5.0},
    "bullish_divergence": {"pivot": 1.0, "lookback": 10.0},
    "bearish_divergence": {"pivot": 2.0, "lookback": 20.0},
    "divergence": {"pivot": 1.0, "lookback": 6.0},
    "convergence": {"pivot": 1.0, "lookback": 30.0},
}


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 60), data=st.data())
def test_unary_into_gives_what_apply_operator_gives(seed, width, data) -> None:
    assert set(UNARY_ARGS) == set(UNARY)
    table = random_table(seed, 4, width)
    prices = np.nan_to_num(random_table(seed + 1, 2, width), nan=1.0)
    high, low = prices.max(axis=0) + 1, prices.min(axis=0)
    columns = data.draw(column_maps(width))
    ops = list(UNARY)
    arguments = [unary_arguments(prepare_args(op, UNARY_ARGS[op], 2), 1) for op in ops]
    left = np.array([i % 4 for i in range(len(ops))], dtype=np.int64)
    fired = np.ones((len(ops), len(columns)), dtype=bool)

    unary_into(
        fired,
        np.arange(len(ops), dtype=np.int64),
        np.array([UNARY[op] for op in ops], dtype=np.int64),
        table,
        left,
        np.concatenate([whole for whole, _ in arguments]),
        np.concatenate([amount for _, amount in arguments]),
        high,
        low,
        columns,
    )

    for i, op in enumerate(ops):
        expected = apply_operator(op, table[left[i]], None, UNARY_ARGS[op], high=high, low=low)
        on_bars = np.where(columns >= 0, expected[np.maximum(columns, 0)], False)
        assert fired[i].tolist() == on_bars.tolist(), op


# --- the pair evaluator, bar after bar ------------------------------------------------


def pair_alerts(seed: int) -> tuple[dict, list]:
    _, specs = generated_scenario(seed=seed, users=120, symbols=1, timeframes=("1h", "4h"))
    pair = [(key, p) for key, p in enumerate(normalized(specs)) if p.base_timeframe == "1h"]
    return conditions_of(pair), pair


def relabelled(candles: pd.DataFrame, step_ms: int) -> pd.DataFrame:
    """5m klines laid out as consecutive bars of another timeframe."""
    return candles.assign(open_time=np.arange(len(candles), dtype=np.int64) * step_ms)


def assert_fresh(evaluation, conditions, pair, candles: dict, bars: int) -> None:
    full = EvaluationPlan(conditions.values()).run(candles, "1h")
    raw = {cid: series.fired for cid, series in full.series.items()}
    for row, (key, playbook) in enumerate(pair):
        assert evaluation.alert_keys[row] == key
        expected = alert_signal(playbook, raw)[len(full.base_open_time) - bars :]
        assert evaluation.holds[row].tolist() == expected.tolist()
    for bar in range(evaluation.bars):
        at = evaluation.series_index(bar)
        full_at = len(full.base_open_time) - evaluation.bars + bar
        assert evaluation.result.base_open_time[at] == full.base_open_time[full_at]
        for cid in conditions:
            series = evaluation.result.series[cid]
            assert series.values_at(at) == full.series[cid].values_at(full_at)
            assert series.fired[at] == full.series[cid].fired[full_at]


def test_the_pair_evaluator_follows_a_real_klines_file_bar_by_bar(ethbtc) -> None:
    # Given the alerts of one pair and a real klines file read as 1h bars
    conditions, pair = pair_alerts(seed=8)
    hours = relabelled(ethbtc.iloc[:900], 3_600_000)
    evaluator = PairEvaluator()

    for end in range(700, 760):
        # When the kept evaluator decides the bars that just closed, with a
        # window of history that slides or grows
        start = 0 if end % 3 else end - 600
        window = hours.iloc[start:end].reset_index(drop=True)
        bars = 1 + end % 2
        evaluation = evaluator.evaluate(conditions, pair, {"1h": window}, "1h", bars)
        # Then it gives what a plan made afresh over the same candles gives
        assert_fresh(evaluation, conditions, pair, {"1h": window}, bars)


def test_the_pair_evaluator_never_reuses_a_history_that_changed(ethbtc) -> None:
    # Given an evaluator that has seen a history
    conditions, pair = pair_alerts(seed=9)
    hours = relabelled(ethbtc.iloc[:800], 3_600_000)
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions, pair, {"1h": hours.iloc[:700]}, "1h", 1)

    changed = hours.iloc[:700].copy()
    changed.loc[650:, ["open", "high", "low", "close"]] *= 1.01
    histories = [
        changed,  # the same bars with other prices
        hours.iloc[:690].reset_index(drop=True),  # shorter: bars went away
        hours.iloc[100:800].reset_index(drop=True),  # a jump ahead
        relabelled(ethbtc.iloc[2000:2700], 3_600_000),  # another market entirely
        hours.iloc[:700],  # the first history again
    ]
    for history in histories:
        # When it is given one that does not continue it
        evaluation = evaluator.evaluate(conditions, pair, {"1h": history}, "1h", 2)
        # Then it gives what a plan made afresh gives
        assert_fresh(evaluation, conditions, pair, {"1h": history}, 2)


# --- the pair evaluator, as conditions leave it ----------------------------------------


def conditions_of(alerts: list) -> dict:
    return {s.condition_id: s.canonical for _, p in alerts for s in p.steps}


def assert_same_evaluation(kept, fresh) -> None:
    """Equal evaluations, whatever order each plan laid its rows out in."""
    assert kept.alert_keys == fresh.alert_keys
    assert same_bits(fresh.holds, kept.holds)
    assert same_bits(fresh.result.base_open_time, kept.result.base_open_time)
    assert list(kept.result.series) == kept.result.fired_order
    assert set(kept.result.series) == set(fresh.result.series)
    assert len(kept.result.series) == len(fresh.result.series) == kept.result.fired.shape[0]
    assert kept.result.stats.conditions == fresh.result.stats.conditions
    assert kept.result.stats.condition_evaluations == fresh.result.stats.condition_evaluations

    def sides(series) -> list:
        if series.right is None:
            return [series.left]
        right = series.right if isinstance(series.right, tuple) else (series.right,)
        return [series.left, *right]

    rows = {cid: row for row, cid in enumerate(kept.result.fired_order)}
    for row, cid in enumerate(fresh.result.fired_order):
        expected, actual = fresh.result.series[cid], kept.result.series[cid]
        assert same_bits(fresh.result.fired[row], kept.result.fired[rows[cid]])
        assert same_bits(expected.fired, actual.fired)
        assert same_bits(kept.result.fired[rows[cid]], actual.fired)
        for expected_side, actual_side in zip(sides(expected), sides(actual), strict=True):
            assert same_bits(expected_side, actual_side), cid


def test_a_kept_plan_asked_for_fewer_conditions_gives_what_a_fresh_one_gives(ethbtc) -> None:
    # Given an evaluator that has evaluated every alert of a pair
    conditions, pair = pair_alerts(seed=8)
    hours = relabelled(ethbtc.iloc[:800], 3_600_000)
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions, pair, {"1h": hours.iloc[:700]}, "1h", 1)
    plan = evaluator.plan

    for step, end in enumerate(range(701, 705), start=1):
        # When alerts that fired once leave it bar after bar, their conditions
        # with them (but one, still subscribed to)
        left = [(key, p) for key, p in pair if key % 20 >= step]
        gone = next(p for key, p in pair if key % 20 < step)
        asked = {**conditions_of(left), gone.steps[0].condition_id: gone.steps[0].canonical}
        candles = {"1h": hours.iloc[:end].reset_index(drop=True)}
        evaluation = evaluator.evaluate(asked, left, candles, "1h", 2)

        # Then the plan is kept, and gives what an evaluator made afresh gives
        assert evaluator.plan is plan
        assert len(asked) < len(plan.conditions)
        fresh = PairEvaluator().evaluate(asked, left, candles, "1h", 2)
        assert_same_evaluation(evaluation, fresh)


def test_the_evaluator_recompiles_for_a_new_condition_not_for_fewer(ethbtc) -> None:
    # Given an evaluator that has evaluated every alert of a pair
    conditions, pair = pair_alerts(seed=9)
    candles = {"1h": relabelled(ethbtc.iloc[:700], 3_600_000)}
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions, pair, candles, "1h", 1)
    plan = evaluator.plan

    # When a few alerts and their conditions leave, then come back
    fewer = pair[:-4]
    assert conditions_of(fewer).keys() < conditions.keys()
    evaluator.evaluate(conditions_of(fewer), fewer, candles, "1h", 1)
    assert evaluator.plan is plan
    evaluation = evaluator.evaluate(conditions, pair, candles, "1h", 1)
    assert evaluator.plan is plan
    assert_same_evaluation(evaluation, PairEvaluator().evaluate(conditions, pair, candles, "1h", 1))

    # When an alert with a condition the plan lacks arrives
    _, other_pair = pair_alerts(seed=10)
    newcomer = next((key, p) for key, p in other_pair if p.steps[0].condition_id not in conditions)
    alerts = [*fewer, newcomer]
    evaluation = evaluator.evaluate(conditions_of(alerts), alerts, candles, "1h", 1)

    # Then the plan is compiled afresh, over just the conditions asked for
    assert evaluator.plan is not plan
    assert evaluator.plan.conditions.keys() == conditions_of(alerts).keys()
    fresh = PairEvaluator().evaluate(conditions_of(alerts), alerts, candles, "1h", 1)
    assert_same_evaluation(evaluation, fresh)


def test_the_evaluator_recompiles_once_a_quarter_of_its_plan_has_left(ethbtc) -> None:
    # Given an evaluator that has evaluated every alert of a pair
    conditions, pair = pair_alerts(seed=10)
    candles = {"1h": relabelled(ethbtc.iloc[:700], 3_600_000)}
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions, pair, candles, "1h", 1)
    plan = evaluator.plan

    # When its alerts leave one by one
    for count in range(len(pair) - 1, 0, -1):
        alerts = pair[:count]
        evaluation = evaluator.evaluate(conditions_of(alerts), alerts, candles, "1h", 1)
        dropped = len(plan.conditions) - len(conditions_of(alerts))
        if evaluator.plan is not plan:
            break
        assert 4 * dropped <= len(plan.conditions)
    else:
        pytest.fail("the plan was never recompiled")

    # Then it is recompiled as soon as more than a quarter of them are gone
    assert 4 * dropped > len(plan.conditions)
    assert evaluator.plan.conditions.keys() == conditions_of(alerts).keys()
    fresh = PairEvaluator().evaluate(conditions_of(alerts), alerts, candles, "1h", 1)
    assert_same_evaluation(evaluation, fresh)


def test_a_small_plan_is_kept_while_only_a_few_conditions_have_left(ethbtc) -> None:
    # Given an evaluator over two alerts
    _, pair = pair_alerts(seed=10)
    candles = {"1h": relabelled(ethbtc.iloc[:700], 3_600_000)}
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions_of(pair[:2]), pair[:2], candles, "1h", 1)
    plan = evaluator.plan

    # When one leaves, taking more than a quarter but fewer than eight conditions
    alerts = pair[:1]
    dropped = len(plan.conditions) - len(conditions_of(alerts))
    assert len(plan.conditions) < 4 * dropped and dropped < 8
    evaluation = evaluator.evaluate(conditions_of(alerts), alerts, candles, "1h", 1)

    # Then the plan is kept, and its result holds just the one alert's conditions
    assert evaluator.plan is plan
    fresh = PairEvaluator().evaluate(conditions_of(alerts), alerts, candles, "1h", 1)
    assert_same_evaluation(evaluation, fresh)


def test_series_columns_from_the_matrices_are_what_each_series_holds(ethbtc) -> None:
    # Given a kept plan asked for some of its conditions, every shape of right
    # side among them (none, a value, a channel)
    conditions, pair = pair_alerts(seed=8)
    hours = relabelled(ethbtc.iloc[:720], 3_600_000)
    evaluator = PairEvaluator()
    evaluator.evaluate(conditions, pair, {"1h": hours.iloc[:700]}, "1h", 1)
    left = [(key, p) for key, p in pair if key % 10]
    evaluation = evaluator.evaluate(conditions_of(left), left, {"1h": hours}, "1h", 3)
    series = evaluation.result.series
    assert len(series) < len(evaluator.plan.conditions)  # rows picked out of the plan's
    bars = [evaluation.series_index(offset) for offset in range(3)]

    # When the values at the last three bars are read as columns, from the
    # run's matrices and, as the one-alert-at-a-time path reads them, from a
    # plain mapping of series
    matrices = series_columns(series, bars)
    plain = series_columns(dict(series.items()), bars)

    # Then both give, row by row (bar by bar, then condition), what each
    # condition's own series holds at that bar
    assert isinstance(series, Mapping) and not isinstance(series, dict)
    assert {shape for shape in matrices.shapes.tolist()} == {NO_RIGHT, VALUE, CHANNEL}
    assert matrices.ids == plain.ids == list(series)
    for name in ("shapes", "fired", "left", "right", "lower", "upper"):
        assert same_bits(getattr(plain, name), getattr(matrices, name)), name
    width = len(matrices.ids)
    for row in range(3 * width):
        condition = series[matrices.ids[row % width]]
        at = bars[row // width]
        assert matrices.fired[row] == condition.fired[at]
        expected = condition.values_at(at)
        right = expected["right"]
        assert same_bits(np.array(expected["left"], dtype=float), matrices.left[row : row + 1][0])
        if isinstance(right, dict):
            got = (matrices.lower[row], matrices.upper[row])
            assert [None if np.isnan(v) else v for v in got] == [right["lower"], right["upper"]]
            assert np.isnan(matrices.right[row])
        else:
            value = matrices.right[row]
            assert (None if np.isnan(value) else value) == right
            assert np.isnan(matrices.lower[row]) and np.isnan(matrices.upper[row])
