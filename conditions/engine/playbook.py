"""Alerts in simple and playbook mode (CONDITIONS.md sections 6 and 7).

`normalize_alert` turns an alert as clients send it into a NormalizedAlert
whose conditions are canonical; `alert_signal` combines the per-bar results
of those conditions into "the alert holds at bar t"; `fire_bars` and
`should_fire` apply the fire mode. Everything is a pure function over arrays.

Sequential order, precisely: with `evaluationOrder: sequential`, s_i(t) is the
last bar in step i's validity window at which raw_i held. The steps that are
valid at t must have s values that never decrease in list order; otherwise
the alert does not hold at t. With gateLogic ALL every step must be valid, so
this is the spec's s_1 <= s_2 <= ... <= s_n.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property, lru_cache

import numpy as np
from numba import njit

from .errors import ConditionError
from .normalize import condition_id, normalize_condition
from .timeframes import normalize_timeframe, timeframe_ms

FIRE_MODES = ("per_bar_close", "per_bar", "once")
MODES = ("simple", "playbook")
VALIDITY_UNITS = {
    "bars": None,
    "bar": None,
    "minutes": 60_000,
    "minute": 60_000,
    "hours": 3_600_000,
    "hour": 3_600_000,
}
MAX_VALIDITY_BARS = 10_000
_MONTH_MS = 30 * 86_400_000


@dataclass(frozen=True)
class Step:
    """One condition of an alert, canonical, with its playbook settings."""

    condition_id: str
    canonical: dict
    priority: float
    logic: str  # AND | OR
    validity_bars: int


@dataclass(frozen=True)
class NormalizedAlert:
    symbol: str
    base_timeframe: str
    mode: str
    logic: str  # simple mode: AND | OR
    gate_logic: str | None  # playbook: ALL | ANY | None (left fold)
    evaluation_order: str  # priority | sequential
    steps: tuple[Step, ...]  # in evaluation order
    fire_mode: str

    @property
    def condition_ids(self) -> list[str]:
        return list(self.canonicals)

    @cached_property
    def canonicals(self) -> dict[str, Mapping]:
        """Each distinct condition of the steps, by condition_id, in step order."""
        return {step.condition_id: step.canonical for step in self.steps}

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "base_timeframe": self.base_timeframe,
            "fireMode": self.fire_mode,
            "conditionConfig": {
                "mode": self.mode,
                "logic": self.logic,
                "gateLogic": self.gate_logic,
                "evaluationOrder": self.evaluation_order,
                "conditions": [
                    {
                        "condition_id": step.condition_id,
                        "priority": step.priority,
                        "logic": step.logic,
                        "validityBars": step.validity_bars,
                    }
                    for step in self.steps
                ],
            },
        }


def _choice(
    value: object, field: str, allowed: tuple[str, ...], default: str, upper: bool = False
) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConditionError(field, f"must be one of {', '.join(allowed)}")
    text = value.upper() if upper else value.lower()
    if text not in allowed:
        raise ConditionError(
            field, f"unknown value {value!r}; expected one of {', '.join(allowed)}"
        )
    return text


def validity_in_bars(duration: object, unit: object, base_timeframe: str, field: str) -> int:
    """Bars of the base timeframe; minutes and hours round up to whole bars."""
    if duration is None:
        return 1
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
    ):
        raise ConditionError(f"{field}.validityDuration", "must be a positive number")
    if duration <= 0:
        raise ConditionError(f"{field}.validityDuration", "must be a positive number")
    unit_name = "bars" if unit is None else unit
    if not isinstance(unit_name, str) or unit_name.lower() not in VALIDITY_UNITS:
        raise ConditionError(f"{field}.validityDurationUnit", "must be one of bars, minutes, hours")
    unit_ms = VALIDITY_UNITS[unit_name.lower()]
    if unit_ms is None:
        if duration != int(duration):
            raise ConditionError(
                f"{field}.validityDuration", "a number of bars must be a whole number"
            )
        bars = int(duration)
    else:
        base_ms = _MONTH_MS if base_timeframe == "1M" else timeframe_ms(base_timeframe)
        # Exact decimal arithmetic: in floats 1.1 hours of 3m bars is
        # 22.000000000000004 bars, which would round up to 23.
        bars = math.ceil(Fraction(str(duration)) * unit_ms / base_ms)
    if bars > MAX_VALIDITY_BARS:
        raise ConditionError(f"{field}.validityDuration", f"at most {MAX_VALIDITY_BARS} bars")
    return bars


def normalize_alert(
    raw: Mapping, *, symbol: str | None = None, base_timeframe: str | None = None
) -> NormalizedAlert:
    """An alert (or a bot's entry conditionConfig, with symbol and timeframe
    given) in the shape of CONDITIONS.md section 6. Raises ConditionError."""
    if not isinstance(raw, Mapping):
        raise ConditionError("", "an alert must be a JSON object")
    symbol = raw.get("symbol", symbol)
    base_timeframe = raw.get("base_timeframe", raw.get("baseTimeframe", base_timeframe))
    if base_timeframe is None:
        raise ConditionError("base_timeframe", "is required")
    base_timeframe = normalize_timeframe(base_timeframe, "base_timeframe")
    if symbol is None:
        raise ConditionError("symbol", "is required")
    config = raw.get("conditionConfig", raw.get("condition_config"))
    config_field = "conditionConfig"
    if config is None and "conditions" in raw:
        config, config_field = raw, ""
    if not isinstance(config, Mapping):
        raise ConditionError(config_field or "conditionConfig", "is required and must be an object")

    def at(name: str) -> str:
        return f"{config_field}.{name}" if config_field else name

    mode = _choice(config.get("mode"), at("mode"), MODES, "simple")
    conditions = config.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ConditionError(at("conditions"), "must be a non-empty list of conditions")
    if len(conditions) > 50:
        raise ConditionError(at("conditions"), "at most 50 conditions per alert")
    logic = _choice(config.get("logic"), at("logic"), ("AND", "OR"), "AND", upper=True)
    gate_logic = None
    if mode == "playbook" and config.get("gateLogic") is not None:
        gate_logic = _choice(
            config.get("gateLogic"), at("gateLogic"), ("ALL", "ANY"), "ALL", upper=True
        )
    order = _choice(
        config.get("evaluationOrder"), at("evaluationOrder"), ("priority", "sequential"), "priority"
    )

    alert_symbol = str(symbol).strip().upper()
    steps = []
    for index, entry in enumerate(conditions):
        field = at(f"conditions.{index}")
        if not isinstance(entry, Mapping):
            raise ConditionError(field, "must be an object")
        wrapped = "condition" in entry and isinstance(entry["condition"], Mapping)
        condition = entry["condition"] if wrapped else entry
        try:
            canonical, cid = _normalized_condition(condition, symbol, base_timeframe)
        except ConditionError as exc:
            raise exc.within(f"{field}.condition" if wrapped else field) from None
        if canonical["symbol"] != alert_symbol:
            # Alerts are evaluated on their own symbol's candles only.
            raise ConditionError(
                f"{field}.condition.symbol" if wrapped else f"{field}.symbol",
                f"{canonical['symbol']} is not the alert's symbol {alert_symbol}",
            )
        priority = entry.get("priority", index + 1) if wrapped else index + 1
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int | float)
            or not math.isfinite(priority)
        ):
            raise ConditionError(f"{field}.priority", "must be a number")
        step_logic = _choice(
            entry.get("logic") if wrapped else None,
            f"{field}.logic",
            ("AND", "OR"),
            "AND",
            upper=True,
        )
        validity = 1
        if mode == "playbook":
            validity = validity_in_bars(
                entry.get("validityDuration"),
                entry.get("validityDurationUnit"),
                base_timeframe,
                field,
            )
        steps.append(Step(cid, canonical, float(priority), step_logic, validity))
    if mode == "playbook" and order == "priority":
        steps.sort(key=lambda step: step.priority)  # stable: ties keep list order

    fire_mode = _choice(
        raw.get("fireMode", raw.get("fire_mode")), "fireMode", FIRE_MODES, "per_bar_close"
    )
    return NormalizedAlert(
        symbol=steps[0].canonical["symbol"] if symbol is None else str(symbol).upper(),
        base_timeframe=base_timeframe,
        mode=mode,
        logic=logic,
        gate_logic=gate_logic,
        evaluation_order=order,
        steps=tuple(steps),
        fire_mode=fire_mode,
    )


def _normalized_condition(condition: Mapping, symbol: object, timeframe: str) -> tuple[dict, str]:
    """normalize_condition and its condition_id, remembered: thousands of
    alerts spell the same few conditions, and a worker normalizes every
    alert of its pairs when it starts. The canonical form is a new dict
    each time, as normalize_condition's is."""
    try:
        key = json.dumps(condition, allow_nan=False)
    except (TypeError, ValueError):  # Decimals, numpy numbers, NaN: as they are
        canonical = normalize_condition(condition, symbol=symbol, timeframe=timeframe)
        return canonical, condition_id(canonical)
    try:
        canonical, cid = _remembered_normalization(key, symbol, timeframe)
    except ConditionError:
        # JSON turned non-string keys into strings: the error to report is
        # the one the condition as given gets.
        normalize_condition(condition, symbol=symbol, timeframe=timeframe)
        raise
    return _copied(canonical), cid


@lru_cache(maxsize=100_000)
def _remembered_normalization(key: str, symbol: object, timeframe: str) -> tuple[dict, str]:
    canonical = normalize_condition(json.loads(key), symbol=symbol, timeframe=timeframe)
    return canonical, condition_id(canonical)


def _copied(value):
    """A canonical form (dicts of dicts, strings and numbers), copied: the
    remembered one is never handed out."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    return value


def _last_true_index(raw: np.ndarray) -> np.ndarray:
    positions = np.where(raw, np.arange(len(raw)), -1)
    return np.maximum.accumulate(positions) if len(raw) else positions


def alert_signal(alert: NormalizedAlert, raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """Whether the alert holds at each base bar, from each condition's raw
    per-bar result (keyed by condition_id)."""
    bars = len(next(iter(raw.values()))) if raw else 0
    if alert.mode == "simple":
        results = [np.asarray(raw[step.condition_id], dtype=bool) for step in alert.steps]
        return (
            np.logical_and.reduce(results)
            if alert.logic == "AND"
            else np.logical_or.reduce(results)
        )

    index = np.arange(bars)
    valid, last_seen = [], []
    for step in alert.steps:
        last = _last_true_index(np.asarray(raw[step.condition_id], dtype=bool))
        valid.append((last >= 0) & (last >= index - step.validity_bars + 1))
        last_seen.append(last)

    if alert.gate_logic == "ALL":
        holds = np.logical_and.reduce(valid)
    elif alert.gate_logic == "ANY":
        holds = np.logical_or.reduce(valid)
    else:
        holds = valid[0]
        for step, step_valid in zip(alert.steps[1:], valid[1:], strict=True):
            holds = (holds & step_valid) if step.logic == "AND" else (holds | step_valid)

    if alert.evaluation_order == "sequential":
        in_order = np.ones(bars, dtype=bool)
        latest = np.full(bars, -1)
        for step_valid, last in zip(valid, last_seen, strict=True):
            in_order &= ~step_valid | (last >= latest)
            latest = np.where(step_valid, np.maximum(latest, last), latest)
        holds = holds & in_order
    return holds


class AlertBatch:
    """`alert_signal` for many alerts at once, at the last bars only: what
    the live evaluation asks each time bars close.

    The alerts' conditions are rows of one raw matrix (conditions x bars);
    `rows` maps each condition_id to its row. The alerts are laid out once
    as arrays, and `holds` decides them all in one compiled call: a pair's
    alerts cost microseconds, not a few array operations per step.
    """

    def __init__(self, alerts: Sequence[NormalizedAlert], rows: Mapping[str, int]) -> None:
        self.count = len(alerts)
        width = max((len(alert.steps) for alert in alerts), default=0)
        # Padding steps (row -1) change nothing: they are never valid, and
        # count as true in an AND and false in an OR.
        self.steps = np.full((self.count, width), -1, dtype=np.int64)
        self.validity = np.ones((self.count, width), dtype=np.int64)
        self.joins_and = np.ones((self.count, width), dtype=bool)
        self.kinds = np.empty(self.count, dtype=np.int64)
        self.sequential = np.zeros(self.count, dtype=bool)
        for index, alert in enumerate(alerts):
            for position, step in enumerate(alert.steps):
                self.steps[index, position] = rows[step.condition_id]
                self.validity[index, position] = step.validity_bars
                self.joins_and[index, position] = step.logic == "AND"
            if alert.mode == "simple":
                self.kinds[index] = _SIMPLE_AND if alert.logic == "AND" else _SIMPLE_OR
            else:
                self.kinds[index] = _GATES[alert.gate_logic]
                self.sequential[index] = alert.evaluation_order == "sequential"
        # Bars of raw history, before the first bar asked for, that a
        # validity window can reach back to.
        self.history = int(self.validity.max()) - 1 if self.count and width else 0

    def select(self, alerts: Sequence[int], rows: np.ndarray) -> AlertBatch:
        """The batch of the alerts at these positions, over conditions laid out
        anew: `rows[r]` is the new row of the condition at row r (each of
        their conditions must have one)."""
        index = np.asarray(alerts, dtype=np.intp)
        batch = object.__new__(AlertBatch)
        batch.count = len(index)
        steps = self.steps[index]
        batch.steps = np.where(steps >= 0, rows[np.maximum(steps, 0)], -1)
        batch.validity = self.validity[index]
        batch.joins_and = self.joins_and[index]
        batch.kinds = self.kinds[index]
        batch.sequential = self.sequential[index]
        width = batch.steps.shape[1]
        batch.history = int(batch.validity.max()) - 1 if batch.count and width else 0
        return batch

    def holds(self, raw: np.ndarray, bars: int) -> np.ndarray:
        """Whether each alert holds at each of the last `bars` columns of
        `raw` (bool, conditions x bars of history): alerts x `bars`.

        Equal to `alert_signal` over the full history at those bars, given
        `raw` holds at least `bars + self.history` columns (or all of them).
        """
        if not self.count or bars == 0:
            return np.zeros((self.count, bars), dtype=bool)
        return _batch_holds(
            raw, bars, self.steps, self.validity, self.joins_and, self.kinds, self.sequential
        )


_SIMPLE_AND, _SIMPLE_OR, _GATE_ALL, _GATE_ANY, _FOLD = range(5)
_GATES = {"ALL": _GATE_ALL, "ANY": _GATE_ANY, None: _FOLD}


@njit(cache=True)
def _batch_holds(
    raw: np.ndarray,
    bars: int,
    steps: np.ndarray,
    validity: np.ndarray,
    joins_and: np.ndarray,
    kinds: np.ndarray,
    sequential: np.ndarray,
) -> np.ndarray:
    """AlertBatch.holds: alert_signal's rules, one alert and bar at a time."""
    count, width = steps.shape
    columns = raw.shape[1]
    first = columns - bars
    result = np.zeros((count, bars), dtype=np.bool_)
    # Per step of one playbook: the last column at or before each bar asked
    # for where its condition held (-1: never).
    last = np.full((width, bars), -1, dtype=np.int64)
    for alert in range(count):
        kind = kinds[alert]
        if kind in (_SIMPLE_AND, _SIMPLE_OR):
            for bar in range(bars):
                holds = kind == _SIMPLE_AND
                for position in range(width):
                    row = steps[alert, position]
                    if row < 0:
                        continue
                    if kind == _SIMPLE_AND:
                        holds = holds and raw[row, first + bar]
                    else:
                        holds = holds or raw[row, first + bar]
                result[alert, bar] = holds
            continue
        for position in range(width):
            row = steps[alert, position]
            if row < 0:
                continue
            seen = -1
            for column in range(columns):
                if raw[row, column]:
                    seen = column
                if column >= first:
                    last[position, column - first] = seen
        for bar in range(bars):
            column = first + bar
            holds = kind == _GATE_ALL
            in_order = True
            latest = -1
            for position in range(width):
                row = steps[alert, position]
                if row < 0:
                    continue
                seen = last[position, bar]
                valid = seen >= 0 and seen >= column - validity[alert, position] + 1
                if kind == _GATE_ALL:
                    holds = holds and valid
                elif kind == _GATE_ANY:
                    holds = holds or valid
                elif position == 0:
                    holds = valid
                elif joins_and[alert, position]:
                    holds = holds and valid
                else:
                    holds = holds or valid
                if valid:
                    in_order = in_order and seen >= latest
                    latest = max(latest, seen)
            result[alert, bar] = holds and (in_order or not sequential[alert])
    return result


def fire_bars(fire_mode: str, signal: np.ndarray) -> np.ndarray:
    """Which closed bars fire, for a stream of closed bars (the backtest).
    per_bar_close and per_bar fire at every bar where the alert holds (at
    most once per bar by construction); once fires only at the first."""
    fired = np.asarray(signal, dtype=bool).copy()
    if fire_mode == "once" and fired.any():
        first = int(np.argmax(fired))
        fired[:] = False
        fired[first] = True
    return fired


def should_fire(
    fire_mode: str,
    *,
    holds: bool,
    bar_closed: bool,
    bar_open_ms: int,
    last_fired_bar_ms: int | None,
) -> bool:
    """The live decision for one observation of one bar. The caller persists
    the trigger keyed on `bar_open_ms` (the debounce key); the database's
    uniqueness makes this safe across workers."""
    if not holds:
        return False
    if not bar_closed and fire_mode != "per_bar":
        return False
    if fire_mode == "once":
        # Fired once is fired for good, whether or not the status change to
        # `triggered` has been seen yet.
        return last_fired_bar_ms is None
    return last_fired_bar_ms is None or bar_open_ms > last_fired_bar_ms
