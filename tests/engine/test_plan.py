"""The evaluation plan: shared work, multi-timeframe alignment without
look-ahead, and the bench_plan command.

Sharing is checked by counting (PlanStats) and by comparing every condition
of a large plan with the same condition evaluated alone. Alignment is checked
against a resample and an as-of join done here with plain pandas, and by
re-running the plan on the data cut at many points: a bar must see the same
thing whatever comes after it.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import talib

from conditions.engine.backtest import CandleSet, run_backtest
from conditions.engine.normalize import canonical_json, condition_id, normalize_condition
from conditions.engine.plan import ConditionSeries, EvaluationPlan
from tests.conftest import REPO

MINUTE = 60_000
HOUR = 60 * MINUTE

# --- many conditions, drawn at random -------------------------------------------

PARAMS = {
    "RSI": [{"length": n} for n in (7, 14, 21)],
    "SMA": [{"length": n, "source": s} for n in (10, 50) for s in ("close", "volume")],
    "EMA": [{"length": n} for n in (9, 21, 50)],
    "MACD": [{"fast": 12, "slow": 26, "signal": 9}, {"fast": 8, "slow": 21, "signal": 5}],
    "BBANDS": [{"length": 20, "std": 2.0}, {"length": 10, "std": 1.5}],
    "STOCH": [{"k": 14, "d": 3, "smooth_k": 3}, {"k": 5, "d": 3, "smooth_k": 1}],
    "ATR": [{"length": 14}],
    "MFI": [{"length": 14}, {"length": 7}],
    "CCI": [{"length": 20}],
}
OUTPUTS = {
    "MACD": ["macd", "signal", "histogram"],
    "BBANDS": ["lower", "middle", "upper", "bandwidth", "percent_b"],
    "STOCH": ["k", "d"],
}
# Thresholds in each output's own range, so most conditions fire somewhere.
RANGES = {
    "RSI": (20, 80), "MFI": (20, 80), "STOCH": (10, 90), "CCI": (-150, 150),
    "ATR": (2e-4, 8e-4), "MACD": (-2e-4, 2e-4), "bandwidth": (0.2, 2.0), "percent_b": (0, 1),
}  # fmt: skip
PRICE_RANGE = (0.085, 0.105)
VALUE_OPS = ["gt", "gte", "lt", "lte", "eq", "crosses_above", "crosses_below", "crosses"]
TIMEFRAMES = ["5m", "5m", "15m", "1h", "4h"]


def random_indicator(rng: random.Random) -> tuple[dict, tuple[float, float]]:
    name = rng.choice(list(PARAMS))
    output = rng.choice(OUTPUTS.get(name, ["value"]))
    params = rng.choice(PARAMS[name])
    if name in ("SMA", "EMA") and params.get("source") == "volume":
        value_range = (50.0, 600.0)
    else:
        value_range = RANGES.get(output, RANGES.get(name, PRICE_RANGE))
    operand = {"kind": "indicator", "name": name, "params": params, "output": output}
    return operand, value_range


def random_condition(rng: random.Random) -> dict:
    left, (low, high) = random_indicator(rng)
    condition: dict = {"symbol": "ETHBTC", "timeframe": rng.choice(TIMEFRAMES), "left": left}
    [shape] = rng.choices(
        ["const", "operand", "channel", "movement", "divergence"], [8, 2, 2, 1, 1]
    )
    if shape == "const":
        condition["op"] = rng.choice(VALUE_OPS)
        condition["right"] = round(rng.uniform(low, high), 6)
    elif shape == "operand":
        condition["op"] = rng.choice(VALUE_OPS)
        condition["left"] = {"kind": "price", "field": rng.choice(["close", "high", "low"])}
        condition["right"] = {
            "kind": "indicator",
            "name": rng.choice(["SMA", "EMA"]),
            "params": {"length": rng.choice([9, 10, 21, 50])},
        }
    elif shape == "channel":
        condition["op"] = rng.choice(
            ["inside_channel", "outside_channel", "entering_channel", "exiting_channel"]
        )
        if rng.random() < 0.5:
            bounds = sorted(round(rng.uniform(low, high), 6) for _ in range(2))
            condition["right"] = {"kind": "channel", "lower": bounds[0], "upper": bounds[1]}
        else:
            condition["left"] = {"kind": "price", "field": "close"}
            bands = {"kind": "indicator", "name": "BBANDS", "params": rng.choice(PARAMS["BBANDS"])}
            condition["right"] = {
                "kind": "channel",
                "lower": {**bands, "output": "lower"},
                "upper": {**bands, "output": "upper"},
            }
    elif shape == "movement":
        condition["op"] = rng.choice(["moving_up", "moving_down"])
        condition["args"] = {"bars": rng.randint(1, 6), "amount": (high - low) / 20}
        if rng.random() < 0.5:
            condition["op"] += "_pct"
            condition["args"] = {"bars": rng.randint(1, 6), "pct": rng.choice([1, 5])}
    else:
        condition["op"] = rng.choice(
            ["bullish_divergence", "bearish_divergence", "divergence", "convergence"]
        )
        condition["args"] = {"pivot": rng.randint(2, 4), "lookback": 60}
    return normalize_condition(condition)


def distinct_conditions(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    found: dict[str, dict] = {}
    while len(found) < count:
        canonical = random_condition(rng)
        found.setdefault(condition_id(canonical), canonical)
    return list(found.values())


def indicator_specs(conditions: list[dict]) -> set[tuple[str, str, str]]:
    """Every distinct (timeframe, name, params) the conditions read."""
    specs = set()
    for condition in conditions:
        right = condition.get("right") or {}
        operands = [condition["left"], right, right.get("lower"), right.get("upper")]
        for operand in operands:
            if operand and operand.get("kind") == "indicator":
                key = (condition["timeframe"], operand["name"], canonical_json(operand["params"]))
                specs.add(key)
    return specs


def assert_same_series(actual: ConditionSeries, expected: ConditionSeries) -> None:
    np.testing.assert_array_equal(actual.fired, expected.fired)
    np.testing.assert_array_equal(actual.left, expected.left)
    if expected.right is None:
        assert actual.right is None
    elif isinstance(expected.right, tuple):
        assert isinstance(actual.right, tuple)
        np.testing.assert_array_equal(actual.right[0], expected.right[0])
        np.testing.assert_array_equal(actual.right[1], expected.right[1])
    else:
        np.testing.assert_array_equal(actual.right, expected.right)


@pytest.fixture(scope="module")
def base(klines: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return klines["ETHBTC-5m"]


@pytest.fixture(scope="module")
def five_hundred() -> list[dict]:
    return distinct_conditions(500, seed=7)


def test_it_computes_each_indicator_and_each_condition_once(
    base: pd.DataFrame, five_hundred: list[dict]
) -> None:
    # Given 500 distinct conditions over 4 timeframes, each given twice
    # (once as a reloaded JSON copy, whose whole numbers have become floats)
    reloaded = [json.loads(canonical_json(c)) for c in five_hundred]
    assert {condition_id(c) for c in reloaded} == {condition_id(c) for c in five_hundred}
    # When one plan evaluates them
    result = EvaluationPlan(five_hundred + reloaded).run({"5m": base}, "5m")
    # Then each distinct indicator spec and each distinct condition is computed once
    specs = indicator_specs(five_hundred)
    assert result.stats.indicator_computations == len(specs)
    assert result.stats.conditions == result.stats.condition_evaluations == 500
    assert set(result.series) == {condition_id(c) for c in five_hundred}
    assert result.stats.resamples == 3
    assert result.stats.operator_calls < 500
    assert 40 < len(specs) < 200
    assert {c["timeframe"] for c in five_hundred} == {"5m", "15m", "1h", "4h"}
    fired_somewhere = sum(series.fired.any() for series in result.series.values())
    assert fired_somewhere > 350


def test_it_gives_each_condition_what_it_gives_it_alone(
    base: pd.DataFrame, five_hundred: list[dict]
) -> None:
    together = EvaluationPlan(five_hundred).run({"5m": base}, "5m")

    for canonical in five_hundred:
        cid = condition_id(canonical)
        alone = EvaluationPlan([canonical]).run({"5m": base}, "5m")
        assert_same_series(together.series[cid], alone.series[cid])
        for bar in (0, 40, 2000, len(base) - 1):
            assert together.series[cid].values_at(bar) == alone.series[cid].values_at(bar)


def test_it_stacks_thresholds_on_one_left_operand_into_one_operator_call(
    base: pd.DataFrame,
) -> None:
    # Given 60 RSI(14) thresholds under one operator, and the same RSI spelled
    # with a float length in a cross
    thresholds = [
        normalize_condition(
            {"indicator": "RSI", "operator": "<", "value": 20 + x / 2},
            symbol="ETHBTC",
            timeframe="5m",
        )
        for x in range(60)
    ]
    cross = {
        "symbol": "ETHBTC",
        "timeframe": "5m",
        "left": {"kind": "indicator", "name": "RSI", "params": {"length": 14.0}, "output": "value"},
        "op": "crosses_above",
        "right": {"kind": "const", "value": 50.0},
    }
    # When they are evaluated
    result = EvaluationPlan([*thresholds, cross]).run({"5m": base}, "5m")
    # Then one RSI and two operator calls serve them all
    assert result.stats.indicator_computations == 1
    assert result.stats.operator_calls == 2
    assert result.stats.condition_evaluations == 61
    rsi = talib.RSI(base["close"].to_numpy(), 14)
    for x, canonical in enumerate(thresholds):
        expected = np.nan_to_num(rsi, nan=np.inf) < 20 + x / 2
        np.testing.assert_array_equal(result.series[condition_id(canonical)].fired, expected)


# --- multi-timeframe ------------------------------------------------------------

PANDAS_RULES = {"5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1d": "1D", "1w": "W-MON"}


def resample_with_pandas(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """UTC buckets, open first, high max, low min, close last, volume sum; a
    bucket without a candle is dropped, never invented."""
    times = pd.to_datetime(candles["open_time"], unit="ms", utc=True)
    resampler = candles.set_index(times).resample(
        PANDAS_RULES[timeframe], closed="left", label="left"
    )
    frame = resampler.agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    frame = frame[resampler.size() > 0]
    opened = frame.index.as_unit("ms").asi8
    following = frame.index + (pd.Timedelta(weeks=1) if timeframe == "1w" else pd.Timedelta(PANDAS_RULES[timeframe]))  # fmt: skip
    return frame.reset_index(drop=True).assign(
        open_time=opened, close_time=following.as_unit("ms").asi8
    )


def align_with_pandas(base: pd.DataFrame, base_ms: int, other: pd.DataFrame) -> np.ndarray:
    """Row of `other` whose candle closed last at or before each base bar's
    close; -1 before the first."""
    closes = pd.DataFrame({"at": base["open_time"].to_numpy() + base_ms})
    candidates = pd.DataFrame({"at": other["close_time"].to_numpy(), "row": np.arange(len(other))})
    joined = pd.merge_asof(closes, candidates, on="at", direction="backward")
    return joined["row"].fillna(-1).to_numpy(dtype=np.int64)


def on_base(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)


def plan_series(conditions: list[dict], candles: pd.DataFrame, timeframe: str) -> dict:
    result = EvaluationPlan(conditions).run({timeframe: candles}, timeframe)
    return {condition_id(c): result.series[condition_id(c)] for c in conditions}


@pytest.mark.parametrize(
    ("file", "base_tf", "base_ms", "other_tf"),
    [
        ("ETHBTC-5m", "5m", 5 * MINUTE, "15m"),
        ("ETHBTC-5m", "5m", 5 * MINUTE, "1h"),
        ("ETHBTC-5m", "5m", 5 * MINUTE, "4h"),
        ("ETHBTC-5m", "5m", 5 * MINUTE, "1d"),
        ("ETHBTC-5m", "5m", 5 * MINUTE, "1w"),
        ("ADABTC-5m", "5m", 5 * MINUTE, "1h"),  # a gap of almost three hours
        ("UNITTESTBTC-1m", "1m", MINUTE, "5m"),  # hundreds of missing minutes
        ("UNITTESTBTC-1m", "1m", MINUTE, "1h"),
    ],
)
def test_it_reads_another_timeframe_from_its_last_closed_candle(
    klines: dict[str, pd.DataFrame], file: str, base_tf: str, base_ms: int, other_tf: str
) -> None:
    # Given base candles and, built here with pandas, the other timeframe's
    base = klines[file]
    other = resample_with_pandas(base, other_tf)
    rows = align_with_pandas(base, base_ms, other)
    rsi = talib.RSI(other["close"].to_numpy(), 14)
    # When the plan evaluates conditions on the other timeframe
    conditions = [
        normalize_condition(raw, symbol="ANY", timeframe=other_tf)
        for raw in (
            {"type": "price", "field": "close", "operator": ">", "value": 0},
            {"type": "price", "field": "high", "operator": ">", "value": 0},
            {"type": "price", "field": "low", "operator": ">", "value": 0},
            {"type": "volume", "operator": ">=", "value": 0},
            {"indicator": "RSI", "operator": "crosses_below", "value": 45},
        )
    ]
    close, high, low, volume, rsi_cross = plan_series(conditions, base, base_tf).values()
    # Then each base bar sees the candle that closed last by its own close
    np.testing.assert_array_equal(close.left, on_base(other["close"].to_numpy(), rows))
    np.testing.assert_array_equal(high.left, on_base(other["high"].to_numpy(), rows))
    np.testing.assert_array_equal(low.left, on_base(other["low"].to_numpy(), rows))
    np.testing.assert_allclose(volume.left, on_base(other["volume"].to_numpy(), rows), rtol=1e-12)
    np.testing.assert_array_equal(close.fired, rows >= 0)
    np.testing.assert_allclose(rsi_cross.left, on_base(rsi, rows), rtol=1e-6)
    crossed = np.zeros(len(other), dtype=bool)
    crossed[1:] = (rsi[1:] < 45) & (rsi[:-1] >= 45)
    np.testing.assert_array_equal(rsi_cross.fired, (rows >= 0) & crossed[np.maximum(rows, 0)])
    assert (rows >= 0).any()


def test_a_5m_bar_sees_the_hour_that_closed_with_it_or_before(base: pd.DataFrame) -> None:
    condition = normalize_condition(
        {"type": "price", "operator": ">", "value": 0}, symbol="ETHBTC", timeframe="1h"
    )
    [series] = plan_series([condition], base, "5m").values()
    opens = base["open_time"].to_numpy()
    closes = base["close"].to_numpy()

    def hour_close(hour_open: int) -> float:
        """The close of the hour opening then: its last 5m candle's close."""
        return closes[np.searchsorted(opens, hour_open + 55 * MINUTE)]

    # 2018-01-11 10:50 closes at 10:55: the 10:00 hour is still forming.
    bar = int(np.searchsorted(opens, 1_515_667_800_000))
    assert series.left[bar] == hour_close(1_515_664_800_000 - HOUR)  # 09:00
    # 10:55 closes at 11:00, with the 10:00 hour.
    assert series.left[bar + 1] == hour_close(1_515_664_800_000)
    assert series.left[bar + 1] == closes[bar + 1]


def test_a_backtest_never_evaluates_a_base_bar_that_has_not_closed(base: pd.DataFrame) -> None:
    # Given 5m candles that end at 04:55, in the middle of an hour
    last_close = int(base["open_time"].iloc[-1]) + 5 * MINUTE
    assert last_close % HOUR != 0
    # When an hourly alert that holds on every bar is backtested over them
    every_bar = {"type": "volume", "operator": ">=", "value": 0}
    alert = {"base_timeframe": "1h", "conditionConfig": {"conditions": [every_bar]}}
    document = run_backtest(alert, [CandleSet("ETHBTC", "5m", base)])
    # Then the hour still forming at the end is no bar, and no trigger
    hours = resample_with_pandas(base, "1h")
    closed_hours = hours["open_time"][hours["close_time"] <= last_close].tolist()
    assert len(closed_hours) == len(hours) - 1
    assert document["bars"] == len(closed_hours)
    opened = [pd.Timestamp(t["bar_open_time"]).value // 1_000_000 for t in document["triggers"]]
    assert opened == closed_hours


def test_a_backtest_reads_a_coarser_timeframe_from_its_own_file(base: pd.DataFrame) -> None:
    # Given an hourly file that is not what resampling the 5m file gives
    hourly = resample_with_pandas(base, "1h")
    hourly[["open", "high", "low", "close"]] *= 2
    # When a 5m alert reads the 1h close
    condition = {"type": "price", "operator": ">", "value": 0, "timeframe": "1h"}
    document = run_backtest(
        {"base_timeframe": "5m", "conditionConfig": {"conditions": [condition]}},
        [
            CandleSet("ETHBTC", "5m", base),
            CandleSet("ETHBTC", "1h", hourly.drop(columns="close_time")),
        ],
    )
    # Then each 5m bar sees the close of the file's last closed hour, from
    # the first bar (04:55) on, which closes with the 04:00 hour
    [cid] = [c["condition_id"] for c in document["conditions"]]
    rows = align_with_pandas(base, 5 * MINUTE, hourly)
    reported = [t["values"][cid]["left"] for t in document["triggers"]]
    assert reported == hourly["close"].to_numpy()[rows].tolist()
    assert len(reported) == len(base)


CUT_CONDITIONS = [
    {"indicator": "RSI", "operator": "crosses_below", "value": 40, "timeframe": "1h"},
    {"indicator": "MACD", "component": "histogram", "operator": "crosses_above", "timeframe": "15m"},
    {"type": "price", "operator": ">", "compareWith": "indicator_component",
     "rhs": {"indicator": "EMA", "length": 9}, "timeframe": "4h"},
    {"indicator": "RSI", "operator": "bullish_divergence", "pivot": 2, "timeframe": "1h"},
    {"indicator": "STOCH", "operator": "entering_channel", "channel": {"lower": 20, "upper": 80},
     "timeframe": "1h"},
    {"type": "volume", "operator": "moving_up_pct", "bars": 2, "pct": 50, "timeframe": "15m"},
    {"indicator": "CCI", "operator": "<", "value": -100},
]  # fmt: skip


def cut_points(bars: int) -> list[int]:
    """Cuts at random, and where an hour or four hours end or begin."""
    rng = random.Random(3)
    random_cuts = rng.sample(range(50, bars), 30)
    boundaries = []
    for near in range(600, bars, 577):
        hour_start, four_hours_start = near - near % 12, near - near % 48
        boundaries += [hour_start, hour_start + 1, four_hours_start]
    return sorted(set(random_cuts + boundaries))


def test_no_bar_sees_a_value_from_a_candle_that_closes_later(base: pd.DataFrame) -> None:
    conditions = [normalize_condition(c, symbol="ETHBTC", timeframe="5m") for c in CUT_CONDITIONS]
    full = plan_series(conditions, base, "5m")
    assert all(series.fired.any() for series in full.values())

    for cut in cut_points(len(base)):
        truncated = plan_series(conditions, base.iloc[:cut], "5m")
        for cid, series in truncated.items():
            whole = full[cid]
            np.testing.assert_array_equal(series.fired, whole.fired[:cut], err_msg=f"cut {cut}")
            np.testing.assert_array_equal(series.left, whole.left[:cut], err_msg=f"cut {cut}")
            if series.right is not None and not isinstance(series.right, tuple):
                np.testing.assert_array_equal(series.right, whole.right[:cut])


def test_a_backtest_cut_short_reports_the_same_triggers_up_to_the_cut(base: pd.DataFrame) -> None:
    alert = {
        "base_timeframe": "5m",
        "conditionConfig": {
            "mode": "playbook",
            "gateLogic": "ANY",
            "conditions": [
                {"condition": condition, "validityDuration": 30, "validityDurationUnit": "minutes"}
                for condition in CUT_CONDITIONS[:5]
            ],
        },
    }
    full = run_backtest(alert, [CandleSet("ETHBTC", "5m", base)])["triggers"]
    assert 100 < len(full) < len(base)

    for cut in cut_points(len(base))[::3]:
        last_open = pd.Timestamp(int(base["open_time"].iloc[cut - 1]), unit="ms", tz="UTC")
        truncated = run_backtest(alert, [CandleSet("ETHBTC", "5m", base.iloc[:cut])])
        expected = [t for t in full if pd.Timestamp(t["bar_open_time"]) <= last_open]
        assert truncated["triggers"] == expected, f"cut {cut}"


# --- bench_plan -----------------------------------------------------------------


def test_bench_plan_prints_its_table_and_a_machine_readable_last_line() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "bench_plan", "--conditions", "50", "--runs", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "bench_plan: 50 conditions on ETHBTC 5m, 1000 candles"
    table = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[1:-1])
    assert table["conditions (distinct)"] == table["condition evaluations"] == "50"
    for label in ("cold, empty numba cache", "cold, numba cache on disk"):
        assert re.fullmatch(r"\d+\.\d ms \(import \d+\.\d \+ run \d+\.\d\)", table[label])
    assert re.fullmatch(r"\d+\.\d ms", table["warm, median of 2"])
    last = re.fullmatch(
        r"bench_plan: conditions=50 indicator_computations=(\d+) cold_ms=(\d+\.\d) warm_ms=(\d+\.\d)",
        lines[-1],
    )
    assert last is not None, lines[-1]
    assert 0 < int(last[1]) == int(table["indicator computations"]) < 50


def test_bench_plan_refuses_a_count_it_cannot_draw() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "bench_plan", "--conditions", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "manage.py bench_plan: error: --conditions must be between 1 and 5000"
    ]


def test_the_bench_conditions_are_distinct_and_repeatable() -> None:
    from conditions.management.commands.bench_plan import random_conditions

    drawn = random_conditions(300, seed=5, symbol="ETHBTC", timeframe="5m")
    assert len({condition_id(c) for c in drawn}) == 300
    assert drawn == random_conditions(300, seed=5, symbol="ETHBTC", timeframe="5m")
    assert drawn != random_conditions(300, seed=6, symbol="ETHBTC", timeframe="5m")
    assert len({c["op"] for c in drawn}) >= 15
