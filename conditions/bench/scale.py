"""The scale cycle on every core: pairs sharded over forked worker processes.

Each worker owns a fixed shard of (symbol, timeframe) pairs, as a Celery
worker that keeps getting the same symbols would: it normalizes its alerts,
evaluates the cycle before the measured ones (which warms whatever it keeps
between cycles), then waits for the signal to evaluate each measured cycle,
one after another, up to cycle 0. Each cycle's wall time is taken in the
parent, from the signal to the last shard's answer; the best is the figure,
as for the seeds' cycles, since this machine's speed varies from one second
to the next, and every cycle's time is reported beside it.

Shards are balanced by the pairs' alerts (each of the same size), the best
predictor of a pair's cost; popular symbols make pairs very unequal.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from conditions.engine.playbook import normalize_alert

from .engine_cycle import CycleOutcome, SharedEvaluator, group_pairs, shared_cycle
from .market import GeneratedMarket
from .scenario import AlertSpec, generated_scenario


@dataclass
class ScaleResult:
    """The best measured cycle (its wall time, outcome and each shard's
    busy time), and every measured cycle's wall time, in order."""

    wall_s: float
    outcome: CycleOutcome
    shard_seconds: list[float]
    cycle_walls: list[float]


def balanced_shards(weights: Sequence[int], count: int) -> list[list[int]]:
    """Indexes of `weights` split into `count` shards of similar total weight
    (largest first, each to the lightest shard so far)."""
    shards: list[list[int]] = [[] for _ in range(count)]
    totals = [0] * count
    for index in sorted(range(len(weights)), key=lambda i: -weights[i]):
        lightest = totals.index(min(totals))
        shards[lightest].append(index)
        totals[lightest] += weights[index]
    return shards


# A shard worker is a function run in the child: prepare(shard) returns an
# object whose run(cycle) evaluates the shard's pairs for that cycle.
ShardFactory = Callable[[list[int]], Any]


def _serve(factory: ShardFactory, shard: list[int], warm: int, connection: Connection) -> None:
    # A forked worker inherits the parent's whole scenario, millions of
    # objects a Celery worker would not hold; left to the garbage collector,
    # each full collection scans them all (a second and more of a measured
    # cycle). Frozen, they are out of its sight; what the worker makes itself
    # (plans, playbooks, rows) is collected as in a worker.
    gc.freeze()
    try:
        worker = factory(shard)
        worker.run(warm)
        # The warm-up leaves the worker's own long-lived objects (a playbook
        # per alert, plans, candles) young, and whether a full collection of
        # them then falls inside the measured cycle depends on allocation
        # counts that any change of code shifts: it moved the database cycle
        # by more than a second (about 0.6 s of each process). The measured
        # cycle starts with no collection pending; a worker pays such a full
        # collection once in a while, not every bar (see the README).
        gc.collect()
        connection.send(("ready", None))
        while True:
            message = connection.recv()
            if message is None:
                break
            started = time.perf_counter()
            outcome = worker.run(message)
            connection.send(("done", (outcome, time.perf_counter() - started)))
    except BaseException as exc:  # the parent reports it; a child has no stderr to speak of
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def run_sharded(
    factory: ShardFactory, weights: Sequence[int], processes: int, cycles: int = 1
) -> ScaleResult:
    """Fork `processes` workers over shards of the pairs, warm them on cycle
    -`cycles`, then time each cycle after it, up to 0, across all of them."""
    if cycles < 1:
        raise ValueError("at least one cycle is measured")
    context = multiprocessing.get_context("fork")
    shards = [shard for shard in balanced_shards(weights, processes) if shard]
    links, children = [], []
    for shard in shards:
        parent_end, child_end = context.Pipe()
        child = context.Process(
            target=_serve, args=(factory, shard, -cycles, child_end), daemon=True
        )
        child.start()
        links.append(parent_end)
        children.append(child)
    measured: list[tuple[float, list]] = []
    try:
        for link in links:
            _expect(link, "ready")
        for cycle in range(1 - cycles, 1):
            started = time.perf_counter()
            for link in links:
                link.send(cycle)
            answers = [_expect(link, "done") for link in links]
            measured.append((time.perf_counter() - started, answers))
    finally:
        for link in links:
            with contextlib.suppress(OSError):
                link.send(None)
        for child in children:
            child.join(30)
            if child.is_alive():
                child.terminate()
    wall, answers = min(measured, key=lambda cycle: cycle[0])
    outcome = CycleOutcome()
    for shard_outcome, _ in answers:
        outcome.merge(shard_outcome)
    return ScaleResult(
        wall, outcome, [seconds for _, seconds in answers], [seconds for seconds, _ in measured]
    )


def _expect(link: Connection, kind: str):
    received, payload = link.recv()
    if received == "error":
        raise RuntimeError(f"a benchmark worker failed: {payload}")
    if received != kind:
        raise RuntimeError(f"a benchmark worker said {received!r}, expected {kind!r}")
    return payload


@dataclass
class ScaleScenario:
    """The scale run's market and alerts, made once in the parent: forked
    workers read them without copying."""

    market: GeneratedMarket
    alerts: list[AlertSpec]  # in alert key order
    pairs: dict[tuple[str, str], list[int]]  # alert keys per (symbol, base timeframe)
    cycles: int = 1  # measured, after a warm-up cycle

    @property
    def pair_keys(self) -> list[tuple[str, str]]:
        return sorted(self.pairs)

    def weights(self) -> list[int]:
        return [len(self.pairs[key]) for key in self.pair_keys]


def scale_scenario(
    *, seed: int, alerts: int, symbols: int, timeframes: tuple[str, ...], cycles: int = 1
) -> ScaleScenario:
    """The scenario, with candles for `cycles` measured cycles and the warm-up."""
    market, specs = generated_scenario(
        seed=seed,
        users=alerts,
        symbols=symbols,
        timeframes=timeframes,
        earliest_cycle=min(-2, -cycles),
    )
    pairs: dict[tuple[str, str], list[int]] = {}
    for key, spec in enumerate(specs):
        pairs.setdefault((spec.symbol, spec.base_timeframe), []).append(key)
    return ScaleScenario(market, specs, pairs, cycles)


class EngineShard:
    """A worker's share of the pairs, evaluated through the engine only."""

    def __init__(self, scenario: ScaleScenario, shard: list[int]) -> None:
        keys = scenario.pair_keys
        self.market = scenario.market
        self.pairs = group_pairs(
            (key, normalize_alert(scenario.alerts[key].raw))
            for index in shard
            for key in scenario.pairs[keys[index]]
        )
        self.evaluator = SharedEvaluator()

    def run(self, cycle: int) -> CycleOutcome:
        return shared_cycle(self.market, self.pairs, cycle, self.evaluator)


def measure_engine_scale(scenario: ScaleScenario, processes: int) -> ScaleResult:
    return run_sharded(
        lambda shard: EngineShard(scenario, shard), scenario.weights(), processes, scenario.cycles
    )
