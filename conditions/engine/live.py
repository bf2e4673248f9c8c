"""The engine side of evaluating one (symbol, timeframe) pair as its bars close.

`PairEvaluator` is what a worker keeps per pair from one evaluation to the
next: the compiled plan over the pair's distinct conditions and the alert
batch over its alerts. The plan is recompiled only when a condition is new to
it or too many of its own have left (alerts that fire once leave every bar);
the batch is rebuilt when the alerts or the conditions change (a process that
has never seen the pair builds them once). Nothing it keeps depends on
candles, so any worker can evaluate any pair and get the same answer.

`evaluate` runs the plan over the bars just closed and as many bars before
them as the alerts' validity windows reach back, then every alert at the
bars just closed: equal to the full history's plan and `alert_signal` at
those bars.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .plan import EvaluationPlan, PlanResult
from .playbook import AlertBatch, NormalizedAlert


@dataclass
class PairEvaluation:
    """The conditions over the last bars, and the alerts at the bars asked for."""

    result: PlanResult  # series over the bars asked for and the history before them
    alert_keys: list[Hashable]
    holds: np.ndarray  # bool, alerts (in alert_keys order) x bars asked for
    playbook_seconds: float

    @property
    def bars(self) -> int:
        return self.holds.shape[1]

    def series_index(self, bar: int) -> int:
        """Where the `bar`-th bar asked for (0 = the oldest) is in the series."""
        return len(self.result.base_open_time) - self.bars + bar


# A kept plan is recompiled once more than a quarter of its conditions, and at
# least this many, are no longer asked for: until then running the few dead
# ones costs less than compiling afresh (about 10 ms for 170 conditions), which
# `once` alerts leaving the pair would otherwise cause almost every bar.
_MIN_DROPPED = 8


class PairEvaluator:
    """The compiled plan and alert batch of one pair, kept between evaluations."""

    def __init__(self) -> None:
        self._conditions_key: frozenset[str] | None = None
        # The conditions asked for, in the plan's order: the rows of the
        # result's `fired`, which the alert batch reads.
        self._order: list[str] = []
        self._alerts_key: list[Hashable] | None = None
        self.plan: EvaluationPlan | None = None
        self._batch: AlertBatch | None = None
        self._batch_order: list[str] = []  # the condition rows the batch was laid out on

    def _keeps_plan(self, conditions_key: frozenset[str]) -> bool:
        """Whether the compiled plan covers these conditions without too much
        dead weight (see _MIN_DROPPED)."""
        if self.plan is None or not conditions_key <= self.plan.conditions.keys():
            return False
        dropped = len(self.plan.conditions) - len(conditions_key)
        return dropped < _MIN_DROPPED or 4 * dropped <= len(self.plan.conditions)

    def _batch_for(
        self, alerts: Sequence[tuple[Hashable, NormalizedAlert]], keys: list[Hashable]
    ) -> AlertBatch:
        """The alert batch over the current rows: when alerts only left (a
        `once` alert fires, a user pauses one), the one kept with its rows
        moved to where their conditions are now; otherwise made afresh."""
        rows = {cid: row for row, cid in enumerate(self._order)}
        if self._batch is not None and self._alerts_key is not None:
            before = {key: position for position, key in enumerate(self._alerts_key)}
            positions = [before.get(key) for key in keys]
            if None not in positions:
                moved = np.array([rows.get(cid, -1) for cid in self._batch_order], dtype=np.int64)
                steps = self._batch.steps[positions]
                # An alert whose condition has no row any more is not the one
                # its key named: made afresh.
                if (moved[steps[steps >= 0]] >= 0).all():
                    return self._batch.select(positions, moved)
        return AlertBatch([alert for _, alert in alerts], rows)

    def evaluate(
        self,
        conditions: Mapping[str, Mapping],
        alerts: Sequence[tuple[Hashable, NormalizedAlert]],
        candles: Mapping[str, pd.DataFrame],
        base_timeframe: str,
        bars: int,
    ) -> PairEvaluation:
        """`conditions`: every distinct condition to evaluate, keyed by its
        condition_id (the alerts' steps among them). `alerts`: (key, alert)
        pairs whose key changes whenever the alert does. `bars`: how many of
        the last base bars to decide the alerts at."""
        conditions_key = frozenset(conditions)
        if conditions_key != self._conditions_key or self.plan is None:
            if not self._keeps_plan(conditions_key):
                self.plan = EvaluationPlan.from_identified(conditions)
            self._order = [cid for cid in self.plan.condition_order if cid in conditions_key]
            self._conditions_key = conditions_key
        alerts_key = [key for key, _ in alerts]
        if alerts_key != self._alerts_key or self._batch_order is not self._order:
            self._batch = self._batch_for(alerts, alerts_key)
            self._alerts_key = alerts_key
            self._batch_order = self._order

        only = self._order if len(self._order) < len(self.plan.conditions) else None
        result = self.plan.run(
            candles, base_timeframe, last_bars=bars + self._batch.history, only=only
        )
        started = time.perf_counter()
        holds = self._batch.holds(result.fired, min(bars, len(result.base_open_time)))
        return PairEvaluation(
            result, list(alerts_key), holds, playbook_seconds=time.perf_counter() - started
        )
