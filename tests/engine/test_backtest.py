"""The backtest (CONDITIONS.md section 8): every operator, run through
run_backtest on real ETHBTC 5m candles, against an expectation computed in the
test from TA-Lib and plain loops written from section 4; the command's JSON
document; and its one-line errors on bad input.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from conditions.engine.backtest import CandleSet, run_backtest
from conditions.engine.catalog import OPERATORS
from conditions.engine.errors import ConditionError
from conditions.engine.normalize import canonical_json
from conditions.management.commands.backtest import read_candle_sets
from tests.conftest import KLINES_DIR, manage
from tradeeon.cli import InputError

ETHBTC_5M = KLINES_DIR / "ETHBTC-5m.csv"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

Right = np.ndarray | tuple[np.ndarray, np.ndarray] | None


@dataclass(frozen=True)
class Market:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@pytest.fixture(scope="module")
def candles(klines: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return klines["ETHBTC-5m"]


@pytest.fixture(scope="module")
def market(candles: pd.DataFrame) -> Market:
    return Market(*(candles[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))


def one_condition_alert(condition: dict, **alert: object) -> dict:
    return {"base_timeframe": "5m", "conditionConfig": {"conditions": [condition]}, **alert}


# --- section 4, one bar at a time -------------------------------------------------


def missing(*values: float) -> bool:
    return any(math.isnan(value) for value in values)


def compare(op: str, a: np.ndarray, b: np.ndarray) -> list[bool]:
    checks: dict[str, Callable[[float, float], bool]] = {
        "gt": lambda x, y: x > y,
        "gte": lambda x, y: x >= y,
        "lt": lambda x, y: x < y,
        "lte": lambda x, y: x <= y,
        "eq": lambda x, y: abs(x - y) <= 1e-9 * max(1.0, abs(y)),
    }
    return [not missing(a[t], b[t]) and checks[op](a[t], b[t]) for t in range(len(a))]


def cross(op: str, a: np.ndarray, b: np.ndarray) -> list[bool]:
    fired = [False]
    for t in range(1, len(a)):
        if missing(a[t], b[t], a[t - 1], b[t - 1]):
            fired.append(False)
            continue
        above = a[t] > b[t] and a[t - 1] <= b[t - 1]
        below = a[t] < b[t] and a[t - 1] >= b[t - 1]
        fired.append(
            {"crosses_above": above, "crosses_below": below, "crosses": above or below}[op]
        )
    return fired


def channel(op: str, a: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> list[bool]:
    def state(t: int) -> str | None:
        if t < 0 or missing(a[t], lower[t], upper[t]):
            return None  # unknown: neither inside nor outside
        return "inside" if lower[t] <= a[t] <= upper[t] else "outside"

    wanted = {
        "inside_channel": ("inside", "any"),
        "outside_channel": ("outside", "any"),
        "entering_channel": ("inside", "outside"),
        "exiting_channel": ("outside", "inside"),
    }[op]
    return [state(t) == wanted[0] and wanted[1] in ("any", state(t - 1)) for t in range(len(a))]


def moving(op: str, a: np.ndarray, bars: int, threshold: float) -> list[bool]:
    fired = []
    for t in range(len(a)):
        if t < bars or missing(a[t], a[t - bars]):
            fired.append(False)
        elif op == "moving_up":
            fired.append(a[t] - a[t - bars] >= threshold)
        elif op == "moving_down":
            fired.append(a[t - bars] - a[t] >= threshold)
        elif a[t - bars] == 0:
            fired.append(False)
        elif op == "moving_up_pct":
            fired.append((a[t] - a[t - bars]) / a[t - bars] * 100 >= threshold)
        else:
            fired.append((a[t - bars] - a[t]) / a[t - bars] * 100 >= threshold)
    return fired


def pivots(price: np.ndarray, k: int, kind: str) -> list[int]:
    """Pivot lows: strictly below the k bars before, at or below the k after
    (pivot highs: the mirror image)."""
    found = []
    for i in range(k, len(price) - k):
        window = price[i - k : i + k + 1]
        if missing(*window):
            continue
        before, after = price[i - k : i], price[i + 1 : i + k + 1]
        if kind == "low" and price[i] < min(before) and price[i] <= min(after):
            found.append(i)
        if kind == "high" and price[i] > max(before) and price[i] >= max(after):
            found.append(i)
    return found


def divergence(
    op: str, a: np.ndarray, market: Market, k: int = 3, lookback: int = 60
) -> list[bool]:
    fired = [False] * len(a)
    kinds = {
        "bullish_divergence": ["low"],
        "bearish_divergence": ["high"],
        "divergence": ["low", "high"],
        "convergence": ["low", "high"],
    }[op]
    for kind in kinds:
        price = market.low if kind == "low" else market.high
        found = pivots(price, k, kind)
        for p1, p2 in itertools.pairwise(found):
            # confirmed at p2 + k: the signal never appears before that bar
            if p2 - p1 > lookback or missing(a[p1], a[p2]):
                continue
            price_up, price_down = price[p2] > price[p1], price[p2] < price[p1]
            indicator_up, indicator_down = a[p2] > a[p1], a[p2] < a[p1]
            if op == "convergence":
                signal = (price_up and indicator_up) or (price_down and indicator_down)
            elif kind == "low":
                signal = price_down and indicator_up
            else:
                signal = price_up and indicator_down
            fired[p2 + k] = fired[p2 + k] or signal
    return fired


# --- each operator through the backtest ---------------------------------------------


# op -> (condition, market -> (fired per bar, left, right or (lower, upper) or None))
Expectation = Callable[[Market], tuple[list[bool], np.ndarray, Right]]
Series = Callable[[Market], np.ndarray]


def at(value: float) -> Series:
    return lambda m: np.full(len(m.close), float(value))


def rsi(m: Market) -> np.ndarray:
    return talib.RSI(m.close, 14)


def bands(m: Market) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return talib.BBANDS(m.close, 20, 2.0, 2.0, 0)  # upper, middle, lower


def percent_b(m: Market) -> np.ndarray:
    upper, _, lower = bands(m)
    return (m.close - lower) / (upper - lower)


def macd(m: Market) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return talib.MACD(m.close, 12, 26, 9)  # line, signal, histogram


def cci(m: Market) -> np.ndarray:
    return talib.CCI(m.high, m.low, m.close, 20)


def by_compare(op: str, left: Series, right: Series) -> Expectation:
    return lambda m: (compare(op, left(m), right(m)), left(m), right(m))


def by_cross(op: str, left: Series, right: Series) -> Expectation:
    return lambda m: (cross(op, left(m), right(m)), left(m), right(m))


def by_channel(op: str, left: Series, lower: Series, upper: Series) -> Expectation:
    return lambda m: (channel(op, left(m), lower(m), upper(m)), left(m), (lower(m), upper(m)))


def by_moving(op: str, left: Series, bars: int, threshold: float) -> Expectation:
    return lambda m: (moving(op, left(m), bars, threshold), left(m), None)


def by_divergence(op: str, left: Series, k: int = 3, lookback: int = 60) -> Expectation:
    return lambda m: (divergence(op, left(m), m, k, lookback), left(m), None)


BB_CHANNEL = {
    "lower": {"indicator": "BB", "component": "lower"},
    "upper": {"indicator": "BBANDS", "component": "upper", "settings": {"stddev": 2}},
}
BB_LOWER, BB_UPPER = (lambda m: bands(m)[2]), (lambda m: bands(m)[0])

OPERATOR_CASES: dict[str, tuple[dict, Expectation]] = {
    "gt": ({"indicator": "RSI", "operator": ">", "value": 70}, by_compare("gt", rsi, at(70))),
    "gte": (
        {"type": "price", "operator": ">=", "compareWith": "indicator_component",
         "rhs": {"indicator": "SMA", "settings": {"length": 50}}},
        by_compare("gte", lambda m: m.close, lambda m: talib.SMA(m.close, 50)),
    ),
    "lt": (
        {"indicator": "MFI", "operator": "<", "value": 20},
        by_compare("lt", lambda m: talib.MFI(m.high, m.low, m.close, m.volume, 14), at(20)),
    ),
    "lte": ({"indicator": "CCI", "operator": "<=", "value": -150}, by_compare("lte", cci, at(-150))),
    "eq": (
        {"type": "price", "operator": "==", "compareWith": "price", "rhs": {"field": "open"}},
        by_compare("eq", lambda m: m.close, lambda m: m.open),
    ),
    "crosses_above": (
        {"indicator": "MACD", "component": "macd", "operator": "crossover",
         "compareWith": "indicator_component", "rhs": {"indicator": "MACD", "component": "signal"}},
        by_cross("crosses_above", lambda m: macd(m)[0], lambda m: macd(m)[1]),
    ),
    "crosses_below": (
        {"indicator": "STOCH", "component": "k", "operator": "crosses_below", "value": 80},
        by_cross("crosses_below", lambda m: talib.STOCH(m.high, m.low, m.close, 14, 3, 0, 3, 0)[0], at(80)),
    ),
    # Written SMA first: crosses is symmetric, so the canonical form puts EMA left.
    "crosses": (
        {"indicator": "SMA", "length": 30, "operator": "crosses", "rhs": {"indicator": "EMA", "length": 9}},
        by_cross("crosses", lambda m: talib.EMA(m.close, 9), lambda m: talib.SMA(m.close, 30)),
    ),
    "inside_channel": (
        {"indicator": "RSI", "operator": "inside_channel", "channel": {"lower": 45, "upper": 55}},
        by_channel("inside_channel", rsi, at(45), at(55)),
    ),
    "outside_channel": (
        {"type": "price", "operator": "outside_channel", "channel": BB_CHANNEL},
        by_channel("outside_channel", lambda m: m.close, BB_LOWER, BB_UPPER),
    ),
    "entering_channel": (
        {"type": "price", "operator": "entering_channel", "channel": BB_CHANNEL},
        by_channel("entering_channel", lambda m: m.close, BB_LOWER, BB_UPPER),
    ),
    "exiting_channel": (
        {"indicator": "BB", "component": "percent_b", "operator": "exiting_channel",
         "channel": {"lower": 0, "upper": 1}},
        by_channel("exiting_channel", percent_b, at(0), at(1)),
    ),
    "moving_up": (
        {"indicator": "ATR", "operator": "moving_up", "bars": 3, "amount": 0.0001},
        by_moving("moving_up", lambda m: talib.ATR(m.high, m.low, m.close, 14), 3, 0.0001),
    ),
    "moving_down": (
        {"type": "volume", "operator": "moving_down", "args": {"amount": 500}},
        by_moving("moving_down", lambda m: m.volume, 1, 500),
    ),
    "moving_up_pct": (
        {"indicator": "SMA", "settings": {"length": 10, "source": "volume"},
         "operator": "moving_up_pct", "bars": 5, "pct": 50},
        by_moving("moving_up_pct", lambda m: talib.SMA(m.volume, 10), 5, 50),
    ),
    "moving_down_pct": (
        {"type": "price", "field": "low", "operator": "moving_down_pct", "bars": 12, "pct": 2},
        by_moving("moving_down_pct", lambda m: m.low, 12, 2),
    ),
    "bullish_divergence": (
        {"indicator": "RSI", "operator": "bullish_divergence"},
        by_divergence("bullish_divergence", rsi),
    ),
    "bearish_divergence": (
        {"indicator": "RSI", "operator": "bearish_divergence", "args": {"pivot": 5, "lookback": 100}},
        by_divergence("bearish_divergence", rsi, 5, 100),
    ),
    "divergence": (
        {"indicator": "MACD", "component": "histogram", "operator": "divergence"},
        by_divergence("divergence", lambda m: macd(m)[2]),
    ),
    "convergence": (
        {"indicator": "CCI", "operator": "convergence", "pivot": 2, "lookback": 30},
        by_divergence("convergence", cci, 2, 30),
    ),
}  # fmt: skip


def assert_number(reported: float | None, expected: np.ndarray, bar: int) -> None:
    """Within 1e-6 relative of the reference, or within rounding of the
    series' scale where the reference is a hair off zero (TA-Lib's MFI can
    say 1.1e-13 where an unchanged typical price gives exactly 0)."""
    if math.isnan(expected[bar]):
        assert reported is None
    else:
        scale = float(np.nanmax(np.abs(expected)))
        assert reported == pytest.approx(expected[bar], rel=1e-6, abs=1e-12 * scale)


def test_the_cases_cover_every_operator() -> None:
    assert set(OPERATOR_CASES) == set(OPERATORS)


@pytest.mark.parametrize("op", list(OPERATOR_CASES))
def test_it_fires_each_operator_exactly_where_the_spec_says(
    op: str, candles: pd.DataFrame, market: Market
) -> None:
    condition, expect = OPERATOR_CASES[op]
    fired, left, right = expect(market)

    document = run_backtest(one_condition_alert(condition), [CandleSet("ETHBTC", "5m", candles)])

    [condition] = document["conditions"]
    assert condition["canonical"]["op"] == op
    open_times = candles["open_time"].to_numpy()
    reported_bars = [
        int(np.searchsorted(open_times, iso_to_ms(t["bar_open_time"])))
        for t in document["triggers"]
    ]
    assert reported_bars == [t for t, hit in enumerate(fired) if hit]
    assert 0 < len(reported_bars) < len(candles)
    for bar, trigger in zip(reported_bars, document["triggers"], strict=True):
        values = trigger["values"][condition["condition_id"]]
        assert_number(values["left"], left, bar)
        if right is None:
            assert values["right"] is None
        elif isinstance(right, tuple):
            assert_number(values["right"]["lower"], right[0], bar)
            assert_number(values["right"]["upper"], right[1], bar)
        else:
            assert_number(values["right"], right, bar)


def iso_to_ms(text: str) -> int:
    return int(pd.Timestamp(text).timestamp() * 1000)


# --- candles that do not fit -------------------------------------------------

BUSY_HOUR = {"type": "volume", "operator": ">=", "value": 0}


@pytest.mark.parametrize(
    ("alert", "sets", "field", "reason"),
    [
        (one_condition_alert(BUSY_HOUR, symbol="BTCUSDT"), [("ETHBTC", "5m")],
         "symbol", "the alert is for BTCUSDT but the candles are ETHBTC"),
        (one_condition_alert({**BUSY_HOUR, "symbol": "BTCUSDT"}), [("ETHBTC", "5m")],
         "conditionConfig.conditions.0.symbol", "BTCUSDT is not the alert's symbol ETHBTC"),
        (one_condition_alert({**BUSY_HOUR, "timeframe": "1m"}), [("ETHBTC", "5m")],
         "candles", "no candles for timeframe 1m"),
        (one_condition_alert(BUSY_HOUR), [("ETHBTC", "5m"), ("ETHBTC", "5m")],
         "candles", "two candle files for timeframe 5m"),
    ],
)  # fmt: skip
def test_it_refuses_candles_that_do_not_fit_the_alert(
    candles: pd.DataFrame, alert: dict, sets: list, field: str, reason: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        run_backtest(alert, [CandleSet(symbol, tf, candles) for symbol, tf in sets])
    assert caught.value.field == field
    assert reason in caught.value.reason


# --- the command -----------------------------------------------------------------


def backtest_command(*args: str | Path) -> subprocess.CompletedProcess:
    return manage("backtest", *args, timeout=120)


PLAYBOOK_ALERT = {
    "symbol": "ethbtc",
    "base_timeframe": "5m",
    "conditionConfig": {
        "mode": "playbook",
        "gateLogic": "ALL",
        "conditions": [
            {"condition": {"indicator": "RSI", "operator": "<", "value": 45, "timeframe": "1h"},
             "priority": 1, "validityDuration": 2, "validityDurationUnit": "hours"},
            {"condition": {"type": "price", "operator": "crosses_above",
                           "compareWith": "indicator_component",
                           "rhs": {"indicator": "EMA", "settings": {"period": 20}}},
             "priority": 2},
        ],
    },
    "fireMode": "per_bar_close",
}  # fmt: skip


def assert_section_8_shape(document: dict, bars: int) -> None:
    assert set(document) == {"alert", "conditions", "bars", "triggers"}
    assert document["bars"] == bars
    ids = []
    for condition in document["conditions"]:
        assert set(condition) == {"condition_id", "canonical"}
        digest = hashlib.sha256(canonical_json(condition["canonical"]).encode()).hexdigest()
        assert condition["condition_id"] == digest
        ids.append(condition["condition_id"])
    assert document["triggers"]
    for trigger in document["triggers"]:
        assert set(trigger) == {"bar_open_time", "close", "values"}
        assert ISO_UTC.match(trigger["bar_open_time"])
        assert isinstance(trigger["close"], float)
        assert list(trigger["values"]) == ids
        for values in trigger["values"].values():
            assert set(values) == {"left", "right"}


HOURLY_ONCE_ALERT = {
    "base_timeframe": "1h",
    "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<", "value": 35}]},
    "fireMode": "once",
}


def write_binance_rows(path: Path, candles: pd.DataFrame) -> Path:
    """The candles as Binance's klines endpoint returns them."""
    rows = [
        [int(t), repr(o), repr(h), repr(low), repr(c), repr(v), int(t) + 59_999, "0", 1, "0", "0", "0"]
        for t, o, h, low, c, v in candles.itertuples(index=False)
    ]  # fmt: skip
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize(
    ("file", "as_binance_rows", "alert", "timeframes", "triggers"),
    [
        ("ETHBTC-5m", False, PLAYBOOK_ALERT, ["1h", "5m"], 125),
        # hours built from minutes with gaps, from a file named otherwise
        ("UNITTESTBTC-1m", True, HOURLY_ONCE_ALERT, ["1h"], 1),
    ],
)
def test_the_command_prints_the_section_8_document(
    tmp_path: Path, klines: dict[str, pd.DataFrame], file: str, as_binance_rows: bool,
    alert: dict, timeframes: list[str], triggers: int,
) -> None:  # fmt: skip
    symbol, timeframe = file.split("-")
    candles = ["--candles", KLINES_DIR / f"{file}.csv"]
    if as_binance_rows:
        rows = write_binance_rows(tmp_path / "download.json", klines[file])
        candles = ["--candles", rows, "--symbol", symbol.lower(), "--timeframe", "1min", "--indent", "1"]  # fmt: skip
    alert_file = write(tmp_path / "alert.json", alert)

    result = backtest_command(*candles, "--alert", alert_file)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    expected = run_backtest(alert, [CandleSet(symbol, timeframe, klines[file])])
    assert_section_8_shape(document, expected["bars"])
    assert document == expected  # the same engine as in-process
    assert document["alert"]["symbol"] == symbol
    assert [c["canonical"]["timeframe"] for c in document["conditions"]] == timeframes
    assert len(document["triggers"]) == triggers
    assert ("\n " in result.stdout) is as_binance_rows  # --indent


def write(path: Path, content: str | dict | list) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# --- bad input: one line on stderr, exit 2 ------------------------------------------

RSI_ALERT = one_condition_alert({"indicator": "RSI", "operator": "<", "value": 30})
HEADER = "open_time,open,high,low,close,volume\n"


def with_alert(alert: dict, candles: Path = ETHBTC_5M) -> Callable[[Path], list]:
    def arguments(directory: Path) -> list:
        return ["--candles", candles, "--alert", write(directory / "alert.json", alert)]

    return arguments


def with_candles(name: str, content: str | list) -> Callable[[Path], list]:
    def arguments(directory: Path) -> list:
        return ["--candles", write(directory / name, content), "--alert", write(directory / "alert.json", RSI_ALERT)]  # fmt: skip

    return arguments


# Each case is a fresh interpreter (~1.5 s of imports), so the command line
# covers what the issue lists; more file errors are checked in-process below,
# a condition on another symbol in test_it_refuses_candles_that_do_not_fit_the_alert.
BAD_INPUTS: dict[str, tuple[Callable[[Path], list], str]] = {
    "malformed csv": (
        with_candles("ETHBTC-5m.csv", HEADER + "1515560100000,0.1,0.2,0.05,abc,1\n"),
        "ETHBTC-5m.csv: malformed CSV",
    ),
    "json that is not kline rows": (
        with_candles("ETHBTC-5m.json", [{"open": 1}]),
        "ETHBTC-5m.json: expected a JSON array of Binance kline rows",
    ),
    "unknown indicator": (
        with_alert(one_condition_alert({"indicator": "RSX", "operator": "<"})),
        "conditionConfig.conditions.0.indicator: unknown indicator 'RSX'",
    ),
    "unknown operator": (
        with_alert(one_condition_alert({"indicator": "RSI", "operator": "<>"})),
        "conditionConfig.conditions.0.operator: unknown operator '<>'",
    ),
    "bad timeframe": (
        with_alert({**RSI_ALERT, "base_timeframe": "90m"}),
        "base_timeframe: unknown timeframe '90m'",
    ),
    "missing file": (
        with_alert(RSI_ALERT, candles=KLINES_DIR / "ETHBTC-1h.csv"),
        "ETHBTC-1h.csv: no such candle file",
    ),
    "symbol mismatch": (
        with_alert({**RSI_ALERT, "symbol": "BTCUSDT"}),
        "the alert is for BTCUSDT but the candles are ETHBTC",
    ),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every bad-input run, two at a time (the machine has two cores)."""

    def run(name: str) -> subprocess.CompletedProcess:
        arguments = BAD_INPUTS[name][0](tmp_path_factory.mktemp("bad"))
        return backtest_command(*arguments)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(BAD_INPUTS, pool.map(run, BAD_INPUTS), strict=True))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_the_problem_and_exit_2(
    bad_input_results: dict, name: str
) -> None:
    result = bad_input_results[name]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("manage.py backtest: error: ")
    assert BAD_INPUTS[name][1] in result.stderr
    assert result.returncode == 2
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("ETHBTC-5m.csv", "1515560100000,0.1,0.2,0.05,0.1,1\n", "the first line must be the header"),
        ("ETHBTC-5m.csv", HEADER, "holds no candles"),
        ("ETHBTC-5m.json", "[[1, 2", "not valid JSON"),
        ("ETHBTC-5m.json", '[[1515560100000, "a", "b", "c", "d", "e"]]', "not a number"),
        ("candles.csv", HEADER + "1,1,1,1,1,1\n", "name it SYMBOL-TIMEFRAME.csv"),
        ("ETHBTC-5m.json", '[[1e30, "1", "1", "1", "1", "1"]]', "out of range"),
    ],
)  # fmt: skip
def test_a_candle_file_that_cannot_be_used_is_one_line_naming_the_file(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as caught:
        read_candle_sets([str(path)], None, None)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert problem in message
    assert "\n" not in message
    assert caught.value.returncode == 2
