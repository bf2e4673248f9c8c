"""Alerts in simple and playbook mode, and fire modes (CONDITIONS.md 6 and 7).

Each expectation is a plain loop over bars written from the spec wording, fed
with per-condition signals computed in the test from TA-Lib, and compared bar
by bar with what run_backtest reports on real ETHBTC 5m candles.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import talib

from conditions.engine.backtest import CandleSet, run_backtest
from conditions.engine.errors import ConditionError
from conditions.engine.playbook import (
    fire_bars,
    normalize_alert,
    should_fire,
    validity_in_bars,
)

SYMBOL = "ETHBTC"

# Four conditions with different rhythms on ETHBTC 5m: a slow regime, a rare
# event, a coin flip and a busy-bar filter.
RSI_LOW = {"indicator": "RSI", "operator": "<", "value": 40, "period": 14}
CLOSE_CROSSES_EMA = {
    "type": "price",
    "operator": "crosses_above",
    "compareWith": "indicator_component",
    "rhs": {"indicator": "EMA", "settings": {"length": 20}},
}
MACD_RISING = {"indicator": "MACD", "component": "histogram", "operator": ">", "value": 0}
BUSY_BAR = {"type": "volume", "operator": ">", "compareWith": "value", "compareValue": 300}


@dataclass(frozen=True)
class Signals:
    """What each condition says at each bar, computed without the engine."""

    candles: pd.DataFrame
    rsi_low: np.ndarray
    close_crosses_ema: np.ndarray
    macd_rising: np.ndarray
    busy_bar: np.ndarray
    rsi: np.ndarray


@pytest.fixture(scope="module")
def signals(klines: dict[str, pd.DataFrame]) -> Signals:
    candles = klines["ETHBTC-5m"]
    close = candles["close"].to_numpy()
    rsi = talib.RSI(close, 14)
    ema = talib.EMA(close, 20)
    histogram = talib.MACD(close, 12, 26, 9)[2]
    crossed = [False] + [
        close[t] > ema[t] and close[t - 1] <= ema[t - 1] for t in range(1, len(close))
    ]
    return Signals(
        candles=candles,
        rsi_low=np.array([not math.isnan(x) and x < 40 for x in rsi]),
        close_crosses_ema=np.array(crossed),
        macd_rising=np.array([not math.isnan(x) and x > 0 for x in histogram]),
        busy_bar=candles["volume"].to_numpy() > 300,
        rsi=rsi,
    )


def backtest(candles: pd.DataFrame, alert: dict) -> dict:
    return run_backtest(alert, [CandleSet(SYMBOL, "5m", candles)])


def trigger_bars(document: dict, candles: pd.DataFrame) -> list[int]:
    """Bar indexes of the triggers, with each trigger's close checked on the way."""
    times = pd.to_datetime(candles["open_time"], unit="ms", utc=True)
    index = {time.strftime("%Y-%m-%dT%H:%M:%SZ"): bar for bar, time in enumerate(times)}
    bars = [index[trigger["bar_open_time"]] for trigger in document["triggers"]]
    closes = candles["close"].to_numpy()
    assert [trigger["close"] for trigger in document["triggers"]] == [closes[b] for b in bars]
    return bars


def simple_alert(conditions: list[dict], **config: object) -> dict:
    return {
        "base_timeframe": "5m",
        "conditionConfig": {"mode": "simple", "conditions": conditions, **config},
    }


def step(condition: dict, **settings: object) -> dict:
    return {"condition": condition, **settings}


def playbook_alert(steps: list[dict], **config: object) -> dict:
    return {
        "base_timeframe": "5m",
        "conditionConfig": {"mode": "playbook", "conditions": steps, **config},
    }


def expected_playbook(
    raws: list[np.ndarray],
    validity: list[int],
    gate: str | None,
    logics: list[str] | None = None,
    sequential: bool = False,
) -> list[int]:
    """Bars where a playbook holds, straight from section 6: `raws` and the
    rest are already in evaluation order."""
    fired = []
    for t in range(len(raws[0])):
        valid, last_seen = [], []
        for raw, bars in zip(raws, validity, strict=True):
            hits = [s for s in range(max(0, t - bars + 1), t + 1) if raw[s]]
            valid.append(bool(hits))
            last_seen.append(hits[-1] if hits else None)
        if gate == "ALL":
            holds = all(valid)
        elif gate == "ANY":
            holds = any(valid)
        else:
            holds = valid[0]
            for step_valid, logic in zip(valid[1:], (logics or [])[1:], strict=True):
                holds = (holds and step_valid) if logic == "AND" else (holds or step_valid)
        if sequential and holds:
            # s_1 <= s_2 <= ... over the steps that happened within their window
            seen = [s for s in last_seen if s is not None]
            holds = all(earlier <= later for earlier, later in itertools.pairwise(seen))
        if holds:
            fired.append(t)
    return fired


# --- simple mode -------------------------------------------------------------


def test_it_fires_a_simple_alert_where_all_its_conditions_hold(signals: Signals) -> None:
    document = backtest(signals.candles, simple_alert([RSI_LOW, BUSY_BAR]))

    expected = [
        t for t in range(len(signals.candles)) if signals.rsi_low[t] and signals.busy_bar[t]
    ]
    assert trigger_bars(document, signals.candles) == expected
    assert len(expected) > 20
    assert document["alert"]["conditionConfig"]["logic"] == "AND"


def test_it_fires_a_simple_or_alert_where_any_condition_holds(signals: Signals) -> None:
    document = backtest(signals.candles, simple_alert([RSI_LOW, CLOSE_CROSSES_EMA], logic="or"))

    expected = [
        t for t in range(len(signals.candles)) if signals.rsi_low[t] or signals.close_crosses_ema[t]
    ]
    assert trigger_bars(document, signals.candles) == expected
    assert len(expected) > sum(signals.rsi_low)


def test_it_reports_every_condition_value_at_each_trigger(signals: Signals) -> None:
    document = backtest(signals.candles, simple_alert([RSI_LOW, BUSY_BAR]))

    rsi_id, volume_id = (c["condition_id"] for c in document["conditions"])
    volumes = signals.candles["volume"].to_numpy()
    for bar, trigger in zip(
        trigger_bars(document, signals.candles), document["triggers"], strict=True
    ):
        assert trigger["values"][rsi_id]["left"] == pytest.approx(signals.rsi[bar], rel=1e-6)
        assert trigger["values"][rsi_id]["right"] == 40.0
        assert trigger["values"][volume_id] == {"left": volumes[bar], "right": 300.0}


# --- playbook validity windows -------------------------------------------------


def test_it_keeps_each_playbook_step_valid_for_its_window_of_bars(signals: Signals) -> None:
    alert = playbook_alert(
        [
            step(CLOSE_CROSSES_EMA, validityDuration=6, validityDurationUnit="bars"),
            step(BUSY_BAR, validityDuration=3),
            step(RSI_LOW),  # default: one bar
        ],
        gateLogic="ALL",
    )
    document = backtest(signals.candles, alert)

    raws = [signals.close_crosses_ema, signals.busy_bar, signals.rsi_low]
    expected = expected_playbook(raws, [6, 3, 1], "ALL")
    assert trigger_bars(document, signals.candles) == expected
    same_bar_only = expected_playbook(raws, [1, 1, 1], "ALL")
    assert len(expected) > len(same_bar_only)
    validity = [c["validityBars"] for c in document["alert"]["conditionConfig"]["conditions"]]
    assert validity == [6, 3, 1]


def test_it_converts_minutes_and_hours_of_validity_to_base_bars_rounding_up(
    signals: Signals,
) -> None:
    # 12 minutes of 5m bars is 2.4 bars: 3; one hour is 12 bars.
    alert = playbook_alert(
        [
            step(CLOSE_CROSSES_EMA, validityDuration=1, validityDurationUnit="hours"),
            step(BUSY_BAR, validityDuration=12, validityDurationUnit="minutes"),
        ],
        gateLogic="ALL",
    )
    document = backtest(signals.candles, alert)

    expected = expected_playbook([signals.close_crosses_ema, signals.busy_bar], [12, 3], "ALL")
    assert trigger_bars(document, signals.candles) == expected
    validity = [c["validityBars"] for c in document["alert"]["conditionConfig"]["conditions"]]
    assert validity == [12, 3]


@pytest.mark.parametrize(
    ("duration", "unit", "base", "bars"),
    [
        (None, None, "5m", 1),
        (4, "bars", "5m", 4),
        (4, "Bars", "1h", 4),
        (5, "minutes", "5m", 1),
        (6, "minutes", "5m", 2),
        (12, "minutes", "5m", 3),
        (1, "minutes", "1h", 1),
        (1, "hours", "5m", 12),
        (1.5, "hours", "1h", 2),
        (90, "minutes", "1h", 2),
        (1.1, "hours", "3m", 22),  # 66 minutes: exactly 22 bars, not 23
        (0.7, "hours", "3m", 14),
        (2.5, "minutes", "1m", 3),
        (24, "hours", "1d", 1),
        (25, "hours", "1d", 2),
        (48, "hours", "1w", 1),
    ],
)
def test_it_turns_a_validity_duration_into_whole_base_bars(
    duration: float | None, unit: str | None, base: str, bars: int
) -> None:
    assert validity_in_bars(duration, unit, base, "conditions.0") == bars


@pytest.mark.parametrize(
    ("duration", "unit", "field"),
    [
        (0, "bars", "validityDuration"),
        (-2, "hours", "validityDuration"),
        (2.5, "bars", "validityDuration"),
        ("3", "bars", "validityDuration"),
        (True, "bars", "validityDuration"),
        (3, "days", "validityDurationUnit"),
        (10_001, "bars", "validityDuration"),
    ],
)
def test_it_rejects_a_validity_that_is_not_a_positive_duration(
    duration: object, unit: str, field: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        normalize_alert(
            playbook_alert([step(RSI_LOW, validityDuration=duration, validityDurationUnit=unit)])
            | {"symbol": SYMBOL}
        )
    assert caught.value.field == f"conditionConfig.conditions.0.{field}"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({**RSI_LOW, "symbol": "btcusdt"}, "conditionConfig.conditions.1.symbol"),
        (step({**RSI_LOW, "symbol": "BTCUSDT"}), "conditionConfig.conditions.1.condition.symbol"),
    ],
)
def test_it_refuses_a_condition_on_another_symbol_than_the_alert(entry: dict, field: str) -> None:
    # The alert is evaluated on ETHBTC candles; a BTCUSDT condition would be
    # evaluated on them too, and be wrong.
    alert = simple_alert([{**BUSY_BAR, "symbol": "ethbtc"}, entry]) | {"symbol": SYMBOL}
    with pytest.raises(ConditionError) as caught:
        normalize_alert(alert)
    assert caught.value.field == field
    assert caught.value.reason == "BTCUSDT is not the alert's symbol ETHBTC"


# --- evaluation order and gate logic ---------------------------------------------


def test_it_orders_steps_by_ascending_priority_and_keeps_ties_in_list_order() -> None:
    alert = normalize_alert(
        playbook_alert(
            [
                step(RSI_LOW, priority=2),
                step(BUSY_BAR, priority=1),
                step(MACD_RISING, priority=2),
                step(CLOSE_CROSSES_EMA, priority=0.5),
            ]
        )
        | {"symbol": SYMBOL}
    )
    operators = [s.canonical["op"] for s in alert.steps]
    kinds = [s.canonical["left"]["kind"] for s in alert.steps]
    assert list(zip(kinds, operators, strict=True)) == [
        ("price", "crosses_above"),
        ("volume", "gt"),
        ("indicator", "lt"),  # RSI, listed before MACD with the same priority
        ("indicator", "gt"),
    ]


def test_it_folds_steps_in_priority_order_when_there_is_no_gate_logic(signals: Signals) -> None:
    # Listed: busy (AND), RSI (AND), MACD (OR). By priority: RSI, MACD, busy,
    # so the alert is (RSI or MACD) and busy; RSI's own logic is ignored.
    alert = playbook_alert(
        [
            step(BUSY_BAR, priority=3, logic="AND"),
            step(RSI_LOW, priority=1, logic="AND"),
            step(MACD_RISING, priority=2, logic="OR"),
        ]
    )
    document = backtest(signals.candles, alert)

    expected = [
        t
        for t in range(len(signals.candles))
        if (signals.rsi_low[t] or signals.macd_rising[t]) and signals.busy_bar[t]
    ]
    assert trigger_bars(document, signals.candles) == expected
    in_list_order = expected_playbook(
        [signals.busy_bar, signals.rsi_low, signals.macd_rising],
        [1, 1, 1],
        None,
        ["AND", "AND", "OR"],
    )
    assert expected != in_list_order


def test_it_keeps_steps_of_equal_priority_in_list_order(signals: Signals) -> None:
    # busy and MACD tie at 2: busy stays first, so (RSI and busy) or MACD,
    # not (RSI or MACD) and busy.
    alert = playbook_alert(
        [
            step(BUSY_BAR, priority=2, logic="AND"),
            step(RSI_LOW, priority=1),
            step(MACD_RISING, priority=2, logic="OR"),
        ]
    )
    document = backtest(signals.candles, alert)

    raws = [signals.rsi_low, signals.busy_bar, signals.macd_rising]
    expected = expected_playbook(raws, [1, 1, 1], None, ["AND", "AND", "OR"])
    assert trigger_bars(document, signals.candles) == expected
    ties_swapped = expected_playbook(
        [signals.rsi_low, signals.macd_rising, signals.busy_bar],
        [1, 1, 1],
        None,
        ["AND", "OR", "AND"],
    )
    assert expected != ties_swapped


def test_it_ignores_the_first_steps_logic_in_the_left_fold(signals: Signals) -> None:
    steps = [step(RSI_LOW, logic="AND"), step(MACD_RISING, logic="AND"), step(BUSY_BAR, logic="OR")]
    first_or = [step(RSI_LOW, logic="OR"), *steps[1:]]

    document = backtest(signals.candles, playbook_alert(steps))
    document_first_or = backtest(signals.candles, playbook_alert(first_or))

    raws = [signals.rsi_low, signals.macd_rising, signals.busy_bar]
    expected = expected_playbook(raws, [1, 1, 1], None, ["AND", "AND", "OR"])
    assert trigger_bars(document, signals.candles) == expected
    assert document_first_or["triggers"] == document["triggers"]


@pytest.mark.parametrize("gate", ["ALL", "ANY", "all"])
def test_it_applies_the_gate_logic_to_the_valid_steps(signals: Signals, gate: str) -> None:
    alert = playbook_alert(
        [
            step(RSI_LOW, validityDuration=4, logic="OR"),  # logic means nothing with a gate
            step(CLOSE_CROSSES_EMA, validityDuration=10),
        ],
        gateLogic=gate,
    )
    document = backtest(signals.candles, alert)

    expected = expected_playbook(
        [signals.rsi_low, signals.close_crosses_ema], [4, 10], gate.upper()
    )
    assert trigger_bars(document, signals.candles) == expected
    assert 0 < len(expected) < len(signals.candles)


@pytest.mark.parametrize("gate", ["ALL", "ANY"])
def test_it_requires_sequential_steps_to_have_happened_in_list_order(
    signals: Signals, gate: str
) -> None:
    # The EMA cross, then a busy bar, then RSI low, each within its window;
    # the priorities are ignored in sequential order.
    alert = playbook_alert(
        [
            step(CLOSE_CROSSES_EMA, priority=3, validityDuration=2, validityDurationUnit="hours"),
            step(BUSY_BAR, priority=2, validityDuration=1, validityDurationUnit="hours"),
            step(RSI_LOW, priority=1, validityDuration=6),
        ],
        gateLogic=gate,
        evaluationOrder="sequential",
    )
    document = backtest(signals.candles, alert)

    raws = [signals.close_crosses_ema, signals.busy_bar, signals.rsi_low]
    expected = expected_playbook(raws, [24, 12, 6], gate, sequential=True)
    assert trigger_bars(document, signals.candles) == expected
    unordered = expected_playbook(raws, [24, 12, 6], gate)
    assert 0 < len(expected) < len(unordered)


def test_it_lets_steps_of_a_sequence_happen_on_the_same_bar(signals: Signals) -> None:
    # s_1 <= s_2: one bar can be both steps, so a sequence of one condition
    # twice is that condition.
    alert = playbook_alert(
        [step(BUSY_BAR, validityDuration=3), step(BUSY_BAR, validityDuration=3)],
        gateLogic="ALL",
        evaluationOrder="sequential",
    )
    document = backtest(signals.candles, alert)

    assert trigger_bars(document, signals.candles) == expected_playbook(
        [signals.busy_bar], [3], "ALL"
    )
    assert len(document["conditions"]) == 1


# --- fire modes --------------------------------------------------------------


def test_it_fires_a_once_alert_only_at_the_first_bar_where_it_holds(signals: Signals) -> None:
    every_bar = backtest(signals.candles, simple_alert([RSI_LOW, BUSY_BAR]))
    once = backtest(signals.candles, {**simple_alert([RSI_LOW, BUSY_BAR]), "fireMode": "once"})

    assert len(every_bar["triggers"]) > 1
    assert once["triggers"] == every_bar["triggers"][:1]
    assert once["alert"]["fireMode"] == "once"


@pytest.mark.parametrize("fire_mode", ["per_bar_close", "per_bar", None])
def test_it_backtests_every_other_fire_mode_on_closed_bars(
    signals: Signals, fire_mode: str | None
) -> None:
    alert = simple_alert([RSI_LOW, BUSY_BAR])
    if fire_mode is not None:
        alert["fireMode"] = fire_mode
    document = backtest(signals.candles, alert)

    expected = [
        t for t in range(len(signals.candles)) if signals.rsi_low[t] and signals.busy_bar[t]
    ]
    assert trigger_bars(document, signals.candles) == expected
    assert document["alert"]["fireMode"] == (fire_mode or "per_bar_close")


def test_fire_bars_fires_once_at_the_first_true_bar_or_not_at_all() -> None:
    signal = np.array([False, False, True, True, False, True])
    assert fire_bars("once", signal).tolist() == [False, False, True, False, False, False]
    assert fire_bars("per_bar_close", signal).tolist() == signal.tolist()
    assert not fire_bars("once", np.zeros(4, dtype=bool)).any()
    assert signal.tolist() == [False, False, True, True, False, True]  # input untouched


# should_fire is the live decision, one observation at a time: polls of the
# forming bar, then the close of that bar.

BAR = 1_515_560_100_000
NEXT_BAR = BAR + 300_000


@pytest.mark.parametrize(
    ("fire_mode", "holds", "closed", "last_fired", "fires"),
    [
        ("per_bar_close", True, False, None, False),  # never on a forming bar
        ("per_bar_close", True, True, None, True),
        ("per_bar_close", False, True, None, False),
        ("per_bar_close", True, True, BAR, False),  # this bar already fired
        ("per_bar_close", True, True, BAR - 300_000, True),
        ("per_bar", True, False, None, True),  # as soon as it holds
        ("per_bar", True, False, BAR, False),
        ("per_bar", True, True, BAR, False),  # the close of a bar fired while forming
        ("per_bar", False, False, None, False),
        ("per_bar", True, False, BAR - 300_000, True),
        ("once", True, False, None, False),
        ("once", True, True, None, True),
        ("once", True, True, BAR - 300_000, False),  # it has fired once already
    ],
)
def test_should_fire_decides_one_observation(
    fire_mode: str, holds: bool, closed: bool, last_fired: int | None, fires: bool
) -> None:
    decision = should_fire(
        fire_mode, holds=holds, bar_closed=closed, bar_open_ms=BAR, last_fired_bar_ms=last_fired
    )
    assert decision is fires


def replay_polls(fire_mode: str, polls: list[tuple[int, bool, bool]]) -> list[int]:
    """Feed (bar open, closed, holds) observations in order, as a worker does,
    and return the bar keys that fired."""
    fired: list[int] = []
    for bar_open, closed, holds in polls:
        if should_fire(
            fire_mode,
            holds=holds,
            bar_closed=closed,
            bar_open_ms=bar_open,
            last_fired_bar_ms=fired[-1] if fired else None,
        ):
            fired.append(bar_open)
    return fired


POLLS = [
    (BAR, False, False),
    (BAR, False, True),  # holds while forming
    (BAR, False, True),
    (BAR, False, False),
    (BAR, True, False),  # and no longer at the close
    (NEXT_BAR, False, True),
    (NEXT_BAR, True, True),
]


def test_a_per_bar_alert_fires_once_per_bar_at_the_first_poll_that_holds() -> None:
    assert replay_polls("per_bar", POLLS) == [BAR, NEXT_BAR]


def test_a_per_bar_close_alert_fires_only_on_bars_that_close_holding() -> None:
    assert replay_polls("per_bar_close", POLLS) == [NEXT_BAR]


def test_a_once_alert_fires_a_single_time() -> None:
    later = [(NEXT_BAR + 300_000, True, True), (NEXT_BAR + 600_000, True, True)]
    assert replay_polls("once", POLLS + later) == [NEXT_BAR]
