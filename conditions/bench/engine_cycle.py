"""One evaluation cycle through the engine alone, two ways.

Shared: per (symbol, base timeframe) pair, one plan over every distinct
condition of the pair's alerts, then every alert's playbook over those
shared results, as `alerts.evaluation.evaluate_symbol` does.

Per alert: each alert on its own, as a dedicated bot would run it: its
candles fetched from memory, a fresh plan over its own conditions (its own
indicators), its own playbook.

Both decide, for the newly closed bar, which alerts fire; both must agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from conditions.engine.live import PairEvaluator
from conditions.engine.plan import EvaluationPlan
from conditions.engine.playbook import NormalizedAlert, alert_signal, should_fire

from .market import GeneratedMarket


@dataclass
class Pair:
    """The alerts of one (symbol, base timeframe), and their distinct conditions."""

    symbol: str
    timeframe: str
    alerts: list[tuple[int, NormalizedAlert]]
    conditions: dict[str, dict] = field(default_factory=dict)

    @cached_property
    def timeframes(self) -> set[str]:
        return {self.timeframe} | {c["timeframe"] for c in self.conditions.values()}


def group_pairs(playbooks: Iterable[tuple[int, NormalizedAlert]]) -> list[Pair]:
    by_pair: dict[tuple[str, str], Pair] = {}
    for key, playbook in playbooks:
        pair_key = (playbook.symbol, playbook.base_timeframe)
        pair = by_pair.get(pair_key)
        if pair is None:
            pair = by_pair[pair_key] = Pair(*pair_key, [])
        pair.alerts.append((key, playbook))
        for step in playbook.steps:
            pair.conditions.setdefault(step.condition_id, step.canonical)
    return sorted(by_pair.values(), key=lambda pair: (pair.symbol, pair.timeframe))


@dataclass
class PhaseTimes:
    """Seconds spent per phase of the cycle (summed over pairs)."""

    candles: float = 0.0
    indicators: float = 0.0
    conditions: float = 0.0
    playbooks: float = 0.0
    database: float = 0.0

    def add(self, other: PhaseTimes) -> None:
        self.candles += other.candles
        self.indicators += other.indicators
        self.conditions += other.conditions
        self.playbooks += other.playbooks
        self.database += other.database


@dataclass
class CycleOutcome:
    """What a cycle decided and what it cost."""

    fired: set[int] = field(default_factory=set)  # alert keys
    phases: PhaseTimes = field(default_factory=PhaseTimes)
    indicator_computations: int = 0
    condition_evaluations: int = 0
    alert_triggers: int = 0
    condition_triggers: int = 0

    def merge(self, other: CycleOutcome) -> None:
        self.fired |= other.fired
        self.phases.add(other.phases)
        self.indicator_computations += other.indicator_computations
        self.condition_evaluations += other.condition_evaluations
        self.alert_triggers += other.alert_triggers
        self.condition_triggers += other.condition_triggers


def pair_candles(
    market: GeneratedMarket, symbol: str, timeframes: Iterable[str], cycle: int
) -> dict[str, pd.DataFrame]:
    return {tf: market.candles(symbol, tf, cycle) for tf in timeframes}


class SharedEvaluator:
    """Evaluates pairs cycle after cycle, keeping per pair what a worker
    process keeps (`PairEvaluator`: the compiled plan and alert batch), and
    per alert the bar it last fired at, as the alert's row does."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairEvaluator] = {}
        self.last_fired: dict[int, int] = {}

    def evaluate(self, pair: Pair, candles: Mapping[str, pd.DataFrame]) -> CycleOutcome:
        outcome = CycleOutcome()
        evaluator = self.pairs.setdefault((pair.symbol, pair.timeframe), PairEvaluator())
        started = time.perf_counter()
        evaluation = evaluator.evaluate(pair.conditions, pair.alerts, candles, pair.timeframe, 1)
        planned = time.perf_counter()
        bar_open = int(evaluation.result.base_open_time[-1])
        for row in np.flatnonzero(evaluation.holds[:, -1]):
            key, playbook = pair.alerts[row]
            if fires(playbook, key, bar_open, self.last_fired):
                outcome.fired.add(key)
        decided = time.perf_counter()
        stats = evaluation.result.stats
        outcome.indicator_computations = stats.indicator_computations
        outcome.condition_evaluations = stats.condition_evaluations
        outcome.phases.indicators += stats.indicator_seconds
        # The plan's own bookkeeping (candle columns, alignment) counts with
        # its conditions.
        outcome.phases.conditions += (planned - started) - stats.indicator_seconds
        outcome.phases.conditions -= evaluation.playbook_seconds
        outcome.phases.playbooks += evaluation.playbook_seconds + (decided - planned)
        return outcome


def fires(playbook: NormalizedAlert, key: int, bar_open: int, last_fired: dict[int, int]) -> bool:
    """The live decision at a closed bar where the alert holds, remembered."""
    fired = should_fire(
        playbook.fire_mode,
        holds=True,
        bar_closed=True,
        bar_open_ms=bar_open,
        last_fired_bar_ms=last_fired.get(key),
    )
    if fired:
        last_fired[key] = bar_open
    return fired


def shared_cycle(
    market: GeneratedMarket, pairs: Sequence[Pair], cycle: int, evaluator: SharedEvaluator
) -> CycleOutcome:
    outcome = CycleOutcome()
    for pair in pairs:
        fetching = time.perf_counter()
        candles = pair_candles(market, pair.symbol, pair.timeframes, cycle)
        outcome.phases.candles += time.perf_counter() - fetching
        outcome.merge(evaluator.evaluate(pair, candles))
    return outcome


class PerAlertEvaluator:
    """Every alert alone, as a dedicated bot: its candles from memory, a
    fresh plan over its own conditions (its own indicators), its playbook
    over the whole history; it remembers only the bar it last fired at."""

    def __init__(self) -> None:
        self.last_fired: dict[int, int] = {}

    def cycle(
        self, market: GeneratedMarket, alerts: Sequence[tuple[int, NormalizedAlert]], cycle: int
    ) -> CycleOutcome:
        outcome = CycleOutcome()
        for key, playbook in alerts:
            fetching = time.perf_counter()
            timeframes = {playbook.base_timeframe} | {
                s.canonical["timeframe"] for s in playbook.steps
            }
            candles = pair_candles(market, playbook.symbol, timeframes, cycle)
            started = time.perf_counter()
            result = EvaluationPlan(step.canonical for step in playbook.steps).run(
                candles, playbook.base_timeframe
            )
            planned = time.perf_counter()
            outcome.indicator_computations += result.stats.indicator_computations
            outcome.condition_evaluations += result.stats.condition_evaluations
            raw = {cid: series.fired for cid, series in result.series.items()}
            bar_open = int(result.base_open_time[-1])
            if alert_signal(playbook, raw)[-1] and fires(playbook, key, bar_open, self.last_fired):
                outcome.fired.add(key)
            outcome.phases.candles += started - fetching
            outcome.phases.indicators += result.stats.indicator_seconds
            outcome.phases.conditions += (planned - started) - result.stats.indicator_seconds
            outcome.phases.playbooks += time.perf_counter() - planned
        return outcome
