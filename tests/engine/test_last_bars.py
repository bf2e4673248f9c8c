"""The live evaluation computes only what the bars that just closed need; it
must give, bit for bit, what the full computation gives at those bars.

- indicator tails against the full indicator (and the SMA against pandas-ta
  itself, the reference the module names);
- a plan over the last bars against the end of a full run;
- the alert batch against alert_signal over the whole history;
- the pair evaluator (kept between bars) against a plan and alert_signal
  made afresh;
- remembered normalization against normalization.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pandas_ta as ta
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conditions.bench.market import GeneratedMarket
from conditions.bench.scenario import generate_alerts, generated_scenario, normalized
from conditions.engine.candles import load_candles
from conditions.engine.errors import ConditionError
from conditions.engine.indicators import candle_columns, compute_indicator, indicator_tail
from conditions.engine.live import PairEvaluator
from conditions.engine.normalize import condition_id, normalize_condition
from conditions.engine.plan import ConditionSeries, EvaluationPlan
from conditions.engine.playbook import AlertBatch, alert_signal, normalize_alert
from tests.conftest import KLINES_DIR
from tests.engine.test_indicators import CASES, case_id
from tests.engine.test_plan import distinct_conditions

TAIL_LENGTHS = (1, 2, 3, 17, 64, 400, 10_000)


def same_bits(expected: np.ndarray, actual: np.ndarray) -> bool:
    return expected.shape == actual.shape and np.array_equal(expected, actual, equal_nan=True)


@pytest.fixture(scope="module")
def ethbtc() -> pd.DataFrame:
    return load_candles(KLINES_DIR / "ETHBTC-5m.csv")


# --- indicators -------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 3, 7, 20, 50, 99, 200, 999])
@pytest.mark.parametrize("source", ["close", "volume"])
def test_the_simple_average_is_pandas_ta_s_bit_for_bit(ethbtc, length, source) -> None:
    for size in (len(ethbtc), 1000, length, length + 1):
        candles = ethbtc.iloc[:size].reset_index(drop=True)
        expected = ta.sma(candles[source], length=length, talib=False).to_numpy()
        actual = compute_indicator(candles, "SMA", {"length": length, "source": source})["value"]
        assert same_bits(expected, actual), f"{size} candles"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_an_indicator_tail_is_the_end_of_the_full_indicator(klines, case) -> None:
    name, params = case
    for stem in ("ETHBTC-5m", "NXTBTC-5m", "UNITTESTBTC-1m"):
        for size in (1000, 300, 60):
            candles = klines[stem].iloc[:size].reset_index(drop=True)
            full = compute_indicator(candles, name, params)
            columns = candle_columns(candles)
            for bars in TAIL_LENGTHS:
                tail = indicator_tail(columns, name, params, bars)
                for output, values in full.items():
                    expected = values[len(values) - min(bars, len(values)) :]
                    assert same_bits(expected, tail[output]), f"{stem} {size} {bars} {output}"


@st.composite
def candle_series(draw: st.DrawFn) -> pd.DataFrame:
    """Random walks with flat stretches (zero ranges and equal typical
    prices are where the indicators' special cases live)."""
    count = draw(st.integers(1, 160))
    steps = draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.001, -0.001, 0.02, -0.02, 0.5, -0.3]),
            min_size=count,
            max_size=count,
        )
    )
    close = 10.0 * np.exp(np.cumsum(steps))
    spread = np.array(
        draw(st.lists(st.sampled_from([0.0, 0.01, 0.05]), min_size=count, max_size=count))
    )
    volume = np.array(
        draw(st.lists(st.sampled_from([0.0, 1.0, 250.5]), min_size=count, max_size=count))
    )
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": np.arange(count, dtype=np.int64) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": volume,
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candles=candle_series(), case=st.sampled_from(CASES), bars=st.integers(1, 170))
def test_an_indicator_tail_is_the_end_of_the_full_indicator_on_random_candles(
    candles, case, bars
) -> None:
    name, params = case
    full = compute_indicator(candles, name, params)
    tail = indicator_tail(candle_columns(candles), name, params, bars)
    for output, values in full.items():
        assert same_bits(values[len(values) - min(bars, len(values)) :], tail[output])


def wilder_reference(values: list[float], length: int) -> list[float]:
    """TA-Lib's Wilder smoothing: the simple average of the first `length`
    values, then (previous * (length - 1) + value) / length."""
    smoothed = [sum(values[:length], 0.0) / length]
    for value in values[length:]:
        smoothed.append((smoothed[-1] * (length - 1) + value) / length)
    return smoothed


@pytest.mark.parametrize("length", [1, 2, 14, 50])
def test_rsi_and_atr_follow_the_wilder_recursion_in_its_own_arithmetic(ethbtc, length) -> None:
    candles = ethbtc.iloc[:700].reset_index(drop=True)
    close, high, low = (candles[name].tolist() for name in ("close", "high", "low"))
    changes = [close[i] - close[i - 1] for i in range(1, len(close))]
    gains = wilder_reference([c if c > 0 else 0.0 for c in changes], length)
    losses = wilder_reference([-c if c < 0 else 0.0 for c in changes], length)
    rsi = [
        100.0 * (gain / (gain + loss)) if gain + loss > 0 else 0.0
        for gain, loss in zip(gains, losses, strict=True)
    ]
    ranges = [max(high[i], close[i - 1]) - min(low[i], close[i - 1]) for i in range(1, len(close))]
    atr = wilder_reference(ranges, length)

    got_rsi = compute_indicator(candles, "RSI", {"length": length})["value"]
    got_atr = compute_indicator(candles, "ATR", {"length": length})["value"]

    assert np.isnan(got_rsi[:length]).all() and np.isnan(got_atr[:length]).all()
    assert got_rsi[length:].tolist() == rsi
    assert got_atr[length:].tolist() == atr


# --- the plan over the last bars -------------------------------------------------


def assert_same_series(expected: ConditionSeries, actual: ConditionSeries, bars: int) -> None:
    def end(values: np.ndarray) -> np.ndarray:
        return values[len(values) - bars :]

    assert same_bits(end(expected.fired), actual.fired)
    assert same_bits(end(expected.left), actual.left)
    if expected.right is None:
        assert actual.right is None
    elif isinstance(expected.right, tuple):
        assert all(same_bits(end(e), a) for e, a in zip(expected.right, actual.right, strict=True))
    else:
        assert same_bits(end(expected.right), actual.right)


@pytest.mark.parametrize("size", [5760, 700])
def test_a_plan_over_the_last_bars_gives_the_end_of_a_full_run(ethbtc, size) -> None:
    # Given 400 conditions of every shape over four timeframes
    conditions = distinct_conditions(400, seed=23)
    candles = {"5m": ethbtc.iloc[:size].reset_index(drop=True)}
    plan = EvaluationPlan(conditions)
    full = plan.run(candles, "5m")

    for bars in (1, 2, 13, 150, size + 5):
        # When only the last bars are asked for
        tail = plan.run(candles, "5m", last_bars=bars)
        # Then every condition gives, there, what the full run gives
        covered = min(bars, size)
        assert same_bits(full.base_open_time[size - covered :], tail.base_open_time)
        for cid, series in full.series.items():
            assert_same_series(series, tail.series[cid], covered)
        order = {cid: row for row, cid in enumerate(tail.fired_order)}
        for cid in full.series:
            assert same_bits(tail.series[cid].fired, tail.fired[order[cid]])
        assert tail.stats.indicator_computations == full.stats.indicator_computations


# --- alerts ------------------------------------------------------------------------

CONDITIONS = [
    normalize_condition(
        {"indicator": "RSI", "operator": "<", "value": level}, symbol="AB", timeframe="1h"
    )
    for level in range(10, 90, 4)
]
IDS = [condition_id(canonical) for canonical in CONDITIONS]


@st.composite
def alerts(draw: st.DrawFn) -> dict:
    steps = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["simple", "playbook"]))
    config: dict = {
        "mode": mode,
        "logic": draw(st.sampled_from(["AND", "OR"])),
        "evaluationOrder": draw(st.sampled_from(["priority", "sequential"])),
        "conditions": [
            {
                "condition": {
                    "indicator": "RSI",
                    "operator": "<",
                    "value": draw(st.sampled_from(range(10, 90, 4))),
                },
                "priority": draw(st.integers(1, 4)),
                "logic": draw(st.sampled_from(["AND", "OR"])),
                "validityDuration": draw(st.integers(1, 15)),
            }
            for _ in range(steps)
        ],
    }
    gate = draw(st.sampled_from(["ALL", "ANY", None]))
    if gate is not None:
        config["gateLogic"] = gate
    return {"symbol": "AB", "base_timeframe": "1h", "conditionConfig": config}


@settings(max_examples=150, deadline=None)
@given(
    raw_alerts=st.lists(alerts(), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    density=st.sampled_from([0.03, 0.2, 0.6]),
    bars=st.integers(1, 4),
    whole_history=st.booleans(),
)
def test_the_alert_batch_holds_where_alert_signal_does(
    raw_alerts, seed, density, bars, whole_history
) -> None:
    playbooks = [normalize_alert(raw) for raw in raw_alerts]
    history = np.random.default_rng(seed).random((len(IDS), 60)) < density
    rows = {cid: row for row, cid in enumerate(IDS)}
    batch = AlertBatch(playbooks, rows)
    given_columns = 60 if whole_history else bars + batch.history

    holds = batch.holds(history[:, 60 - given_columns :], bars)

    for index, playbook in enumerate(playbooks):
        expected = alert_signal(playbook, {cid: history[row] for cid, row in rows.items()})
        assert holds[index].tolist() == expected[60 - bars :].tolist()


def test_the_pair_evaluator_agrees_with_a_fresh_plan_bar_after_bar() -> None:
    # Given the alerts of one pair, the last cycles of a generated market
    market, specs = generated_scenario(seed=3, users=150, symbols=1, timeframes=("1h", "4h"))
    pair = [(key, p) for key, p in enumerate(normalized(specs)) if p.base_timeframe == "1h"]
    conditions = {s.condition_id: s.canonical for _, p in pair for s in p.steps}
    evaluator = PairEvaluator()

    for cycle in (-2, -1, 0):
        candles = {tf: market.candles(market.symbols[0], tf, cycle) for tf in ("1h", "4h")}
        # When the kept evaluator decides the last two bars
        evaluation = evaluator.evaluate(conditions, pair, candles, "1h", 2)
        # Then a plan made afresh and alert_signal over the whole history agree
        full = EvaluationPlan(conditions.values()).run(candles, "1h")
        raw = {cid: series.fired for cid, series in full.series.items()}
        for row, (key, playbook) in enumerate(pair):
            assert evaluation.alert_keys[row] == key
            assert evaluation.holds[row].tolist() == alert_signal(playbook, raw)[-2:].tolist()
        last = evaluation.series_index(1)
        for cid in conditions:
            assert evaluation.result.series[cid].values_at(last) == full.series[cid].values_at(999)


def test_the_pair_evaluator_follows_changes_of_conditions_and_alerts() -> None:
    market = GeneratedMarket(symbols=1, timeframes=("1h",), seed=4)
    candles = {"1h": market.candles(market.symbols[0], "1h")}
    first = normalize_alert(
        {
            "symbol": "AB",
            "base_timeframe": "1h",
            "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": ">", "value": 0}]},
        }
    )
    second = normalize_alert(
        {
            "symbol": "AB",
            "base_timeframe": "1h",
            "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<", "value": 0}]},
        }
    )
    evaluator = PairEvaluator()

    def decide(*playbooks):
        conditions = {s.condition_id: s.canonical for p in playbooks for s in p.steps}
        return evaluator.evaluate(conditions, list(enumerate(playbooks)), candles, "1h", 1)

    assert decide(first).holds.tolist() == [[True]]
    assert decide(second).holds.tolist() == [[False]]
    assert decide(first, second).holds.tolist() == [[True], [False]]


# --- normalization, remembered ---------------------------------------------------


def test_normalizing_an_alert_twice_gives_equal_and_separate_canonical_forms() -> None:
    raw = {
        "symbol": "ethbtc",
        "base_timeframe": "60m",
        "conditionConfig": {
            "conditions": [{"indicator": "RSI", "period": 14, "operator": "<", "value": 30}]
        },
    }
    first, second = normalize_alert(raw), normalize_alert(raw)
    expected = normalize_condition(
        raw["conditionConfig"]["conditions"][0], symbol="ethbtc", timeframe="1h"
    )

    assert first.steps[0].canonical == second.steps[0].canonical == expected
    assert first.steps[0].condition_id == condition_id(expected)
    assert first.steps[0].canonical["left"]["params"]["length"] == 14
    assert isinstance(first.steps[0].canonical["left"]["params"]["length"], int)
    first.steps[0].canonical["left"]["params"]["length"] = 99
    assert normalize_alert(raw).steps[0].canonical == expected


def test_a_condition_json_cannot_carry_is_normalized_as_it_is() -> None:
    from decimal import Decimal

    raw = {
        "symbol": "ETHBTC",
        "base_timeframe": "1h",
        "conditionConfig": {
            "conditions": [{"indicator": "RSI", "operator": "<", "value": Decimal("30")}]
        },
    }
    assert normalize_alert(raw).steps[0].canonical["right"] == {"kind": "const", "value": 30.0}


def test_a_key_that_is_not_a_string_is_reported_as_such_every_time() -> None:
    raw = {
        "symbol": "ETHBTC",
        "base_timeframe": "1h",
        "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<", 7: 30}]},
    }
    for _ in range(2):
        with pytest.raises(ConditionError, match="keys must be strings"):
            normalize_alert(raw)


def test_random_alerts_normalize_the_same_remembered_or_not() -> None:
    rng = random.Random(8)
    market = GeneratedMarket(symbols=2, timeframes=("1h",), seed=8)
    specs = generate_alerts(
        seed=rng.randint(0, 1000),
        users=200,
        alerts_per_user=1,
        symbols=market.symbols,
        timeframes=("1h",),
        reference_prices=market.reference_prices,
    )
    for spec in specs:
        for step in normalize_alert(spec.raw).steps:
            assert step.condition_id == condition_id(step.canonical)
