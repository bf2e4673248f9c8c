"""The seeds' scenario: shared evaluation against one evaluation per alert.

Both evaluate the same cycle (every pair's newly closed bar) after the cycle
before, which warms what each keeps: the shared side keeps per pair its
compiled plan and alert batch, as a worker does; the per-alert side keeps
nothing but when each alert last fired, as a dedicated bot recomputing its
indicators would. Both are timed several times and the best of each
taken, so that neither side's figure carries more of the machine's noise
than the other's (the per-alert cycle fewer times: it is a hundred times
longer). Both must fire the same alerts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .engine_cycle import (
    CycleOutcome,
    PerAlertEvaluator,
    SharedEvaluator,
    group_pairs,
    shared_cycle,
)
from .scenario import ScenarioStats, generated_scenario, normalized, scenario_stats

PER_ALERT_REPEATS = 3


@dataclass
class SeedsResult:
    stats: ScenarioStats
    shared_s: float
    per_alert_s: float
    shared: CycleOutcome
    per_alert: CycleOutcome
    repeats: int
    per_alert_repeats: int

    @property
    def ratio(self) -> float:
        return self.per_alert_s / self.shared_s if self.shared_s else float("inf")


def measure_seeds(
    *, seed: int, users: int, symbols: int, timeframes: tuple[str, ...], repeats: int
) -> SeedsResult:
    market, alerts = generated_scenario(
        seed=seed, users=users, symbols=symbols, timeframes=timeframes
    )
    playbooks = normalized(alerts)
    keyed = list(enumerate(playbooks))
    pairs = group_pairs(keyed)

    shared = SharedEvaluator()
    shared_cycle(market, pairs, -1, shared)
    memory = dict(shared.last_fired)
    best_s, best = float("inf"), CycleOutcome()
    for _ in range(repeats):
        # Every repeat evaluates the same bar from the same memory of fires.
        shared.last_fired = dict(memory)
        started = time.perf_counter()
        outcome = shared_cycle(market, pairs, 0, shared)
        elapsed = time.perf_counter() - started
        if elapsed < best_s:
            best_s, best = elapsed, outcome

    alone = PerAlertEvaluator()
    alone.cycle(market, keyed, -1)
    memory = dict(alone.last_fired)
    per_alert_s, per_alert = float("inf"), CycleOutcome()
    for _ in range(min(repeats, PER_ALERT_REPEATS)):
        alone.last_fired = dict(memory)
        started = time.perf_counter()
        outcome = alone.cycle(market, keyed, 0)
        elapsed = time.perf_counter() - started
        if elapsed < per_alert_s:
            per_alert_s, per_alert = elapsed, outcome
    if per_alert.fired != best.fired:
        raise RuntimeError(
            "shared and per-alert evaluation fired different alerts: "
            f"{len(best.fired ^ per_alert.fired)} differ"
        )
    stats = scenario_stats(alerts, playbooks)
    return SeedsResult(
        stats, best_s, per_alert_s, best, per_alert, repeats, min(repeats, PER_ALERT_REPEATS)
    )
