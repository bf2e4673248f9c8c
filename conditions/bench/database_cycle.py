"""The scale cycle with its database writes: `evaluate_symbol` on every pair.

Each shard process serves its candles from the generated market through the
production path (a `KlineCache` over a `ReplaySource` whose clock is set to
each pair's bar close; the cache lives in the process, as Redis would for a
worker) and writes into the scratch database what a worker writes: the
condition evaluation cache, registry counters, condition and alert
triggers, outbox rows, the evaluation cursor (dispatch, which follows the
commit, is left to the end-to-end part). Evaluating the cycle before
the measured ones loads each process's kline cache, normalizes its alerts and
compiles its plans, as a worker that has been running does.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.db import connections
from django.test.utils import override_settings

from alerts.evaluation import evaluate_symbol
from conditions.engine.playbook import normalize_alert
from conditions.engine.timeframes import timeframe_ms
from conditions.marketdata.cache import KlineCache
from conditions.marketdata.replay import Clock, ReplayMarket, ReplaySource

from .database import Links, links_of, seed
from .engine_cycle import CycleOutcome
from .market import CYCLE_CLOSE_MS, GeneratedMarket
from .scale import ScaleResult, ScaleScenario, run_sharded


def replay_market(market: GeneratedMarket) -> ReplayMarket:
    """Every generated series, as candle files the replay source serves."""
    frames = {
        (symbol, timeframe): market.series(symbol, timeframe)
        for symbol in market.symbols
        for timeframe in market.timeframes
    }
    return ReplayMarket(frames)


def cycle_close_ms(timeframe: str, cycle: int) -> int:
    """When the bar of `timeframe` that cycle `cycle` evaluates closes."""
    return CYCLE_CLOSE_MS + cycle * timeframe_ms(timeframe)


class DatabaseShard:
    """A worker process's share of the pairs, evaluated with evaluate_symbol."""

    def __init__(self, replay: ReplayMarket, pairs: Sequence[tuple[str, str]]) -> None:
        # Each forked process opens its own connections.
        connections.close_all()
        self.pairs = pairs
        self.clock = Clock(CYCLE_CLOSE_MS, speed=0.0)
        store = LocMemCache("bench-klines", {"OPTIONS": {"MAX_ENTRIES": 1_000_000}})
        self.source = KlineCache(ReplaySource(replay, self.clock), store, key_prefix="bench")

    def run(self, cycle: int) -> CycleOutcome:
        outcome = CycleOutcome()
        for symbol, timeframe in self.pairs:
            now_ms = cycle_close_ms(timeframe, cycle)
            self.clock.set(now_ms)
            report = evaluate_symbol(
                symbol, timeframe, now_ms=now_ms, source=self.source, dispatch=False
            )
            outcome.condition_evaluations += report.conditions * len(report.bars)
            outcome.indicator_computations += report.indicator_computations
            outcome.alert_triggers += report.alert_triggers
            outcome.condition_triggers += report.condition_triggers
            phases = report.phases_ms
            outcome.phases.candles += phases.get("candles", 0.0) / 1000
            outcome.phases.indicators += phases.get("indicators", 0.0) / 1000
            outcome.phases.conditions += phases.get("conditions", 0.0) / 1000
            outcome.phases.playbooks += phases.get("playbooks", 0.0) / 1000
            outcome.phases.database += phases.get("database", 0.0) / 1000
        return outcome


def _links_of_chunk(scenario: ScaleScenario, keys: range) -> Links:
    return links_of(normalize_alert(scenario.alerts[key].raw) for key in keys)


def normalized_links(scenario: ScaleScenario, processes: int) -> Links:
    """Every alert normalized, on every core (a hundred thousand take a
    minute on one)."""
    count = len(scenario.alerts)
    chunk = max(1, -(-count // (processes * 4)))
    chunks = [range(start, min(count, start + chunk)) for start in range(0, count, chunk)]
    context = multiprocessing.get_context("fork")
    links = Links()
    with context.Pool(processes) as pool:
        for part in pool.map(partial(_links_of_chunk, scenario), chunks):
            links.extend(part)
    return links


def measure_database_scale(scenario: ScaleScenario, processes: int) -> ScaleResult:
    """Seed a scratch database, then time one cycle of evaluate_symbol on
    every pair, sharded over `processes` processes."""
    from alerts.management.commands import bench_pipeline as pipeline

    links = normalized_links(scenario, processes)
    replay = replay_market(scenario.market)
    keys = scenario.pair_keys
    namespace = f"benchdb{os.getpid()}"
    # The metrics evaluate_symbol counts go to a cache of the benchmark's own.
    caches = (
        pipeline.namespaced_cache(namespace)
        if settings.REDIS_URL
        else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    with (
        pipeline.scratch_database(f"tradeeon_bench_{os.getpid()}"),
        pipeline.redis_namespace(namespace) if settings.REDIS_URL else nullcontext(),
        override_settings(CACHES=caches),
    ):
        seed(scenario.alerts, links)
        connections.close_all()
        return run_sharded(
            lambda shard: DatabaseShard(replay, [keys[index] for index in shard]),
            scenario.weights(),
            processes,
            scenario.cycles,
        )
