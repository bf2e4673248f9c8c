"""python manage.py bench_plan [--conditions 500] [--bars 1000] [--runs 20]

Times one evaluation plan over many distinct conditions of one symbol: cold
(a fresh interpreter importing the engine, with and without numba's on-disk
cache of compiled loops) and warm (the median of repeated runs in this
process), and shows how few indicator computations the conditions share.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.core.management.base import CommandError

from conditions.engine.candles import load_candles, parse_file_name
from conditions.engine.normalize import condition_id, normalize_condition
from conditions.engine.plan import EvaluationPlan, PlanStats
from conditions.engine.timeframes import normalize_timeframe
from tradeeon.cli import InputError, StrictCommand

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CANDLES = REPO / "tests" / "data" / "klines" / "ETHBTC-5m.csv"
MAX_CONDITIONS = 5000

# Parameter choices people actually use, so conditions share indicators the
# way real subscriptions do; thresholds vary freely.
_INDICATORS: dict[str, list[dict]] = {
    "RSI": [{"length": n} for n in (7, 14, 21)],
    "SMA": [{"length": n, "source": s} for n in (20, 50, 100) for s in ("close", "volume")],
    "EMA": [{"length": n} for n in (9, 12, 20, 26, 50)],
    "MACD": [{"fast": 12, "slow": 26, "signal": 9}, {"fast": 5, "slow": 35, "signal": 5}],
    "BBANDS": [{"length": 20, "std": 2.0}, {"length": 20, "std": 2.5}],
    "STOCH": [{"k": 14, "d": 3, "smooth_k": 3}],
    "ATR": [{"length": 14}],
    "MFI": [{"length": 14}],
    "CCI": [{"length": 20}],
}
_OUTPUTS = {
    "MACD": ("macd", "signal", "histogram"),
    "BBANDS": ("lower", "middle", "upper", "percent_b", "bandwidth"),
    "STOCH": ("k", "d"),
}
_OSCILLATORS = ("RSI", "MFI", "STOCH")
_VALUE_OPERATORS = ("gt", "gte", "lt", "lte", "crosses_above", "crosses_below", "crosses")
_MOVEMENTS = ("moving_up", "moving_down", "moving_up_pct", "moving_down_pct")
_DIVERGENCES = ("bullish_divergence", "bearish_divergence", "divergence", "convergence")

# Run in a fresh interpreter: imports the engine, loads the candles and the
# conditions (untimed), runs the plan once, prints the timings as JSON.
_COLD_RUN = """
import time
started = time.perf_counter()
from conditions.engine.plan import EvaluationPlan
imported = time.perf_counter()
import json, sys
from conditions.engine.candles import load_candles
job = json.load(open(sys.argv[1]))
candles = load_candles(job["candles"]).head(job["bars"]).reset_index(drop=True)
plan = EvaluationPlan(job["conditions"])
before_run = time.perf_counter()
result = plan.run({job["timeframe"]: candles}, job["timeframe"])
finished = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000,
                  "run_ms": (finished - before_run) * 1000,
                  "conditions": result.stats.condition_evaluations}))
"""


def random_conditions(count: int, seed: int, symbol: str, timeframe: str) -> list[dict]:
    """`count` distinct canonical conditions over the catalog's indicators,
    operators and thresholds; the same seed gives the same list."""
    rng = random.Random(seed)
    conditions: dict[str, dict] = {}
    for _ in range(count * 50):
        if len(conditions) == count:
            break
        canonical = normalize_condition(_random_condition(rng), symbol=symbol, timeframe=timeframe)
        conditions.setdefault(condition_id(canonical), canonical)
    if len(conditions) < count:
        raise ValueError(f"could only draw {len(conditions)} distinct conditions")
    return list(conditions.values())


def _random_indicator(rng: random.Random, names: tuple[str, ...] = tuple(_INDICATORS)) -> dict:
    name = rng.choice(names)
    return {
        "indicator": name,
        "component": rng.choice(_OUTPUTS.get(name, ("value",))),
        "settings": dict(rng.choice(_INDICATORS[name])),
    }


def _random_condition(rng: random.Random) -> dict:
    kind = rng.choices(
        ("threshold", "price_vs_average", "channel", "movement", "divergence"), (6, 2, 1, 1, 1)
    )[0]
    if kind == "threshold":
        name = rng.choice((*_OSCILLATORS, "CCI", "MACD"))
        threshold = rng.randint(5, 95) if name in _OSCILLATORS else rng.randint(-200, 200)
        if name == "MACD":
            threshold = threshold * 1e-6
        return {
            **_random_indicator(rng, (name,)),
            "operator": rng.choice(_VALUE_OPERATORS),
            "value": threshold,
        }
    if kind == "price_vs_average":
        return {
            "type": "price",
            "field": rng.choice(("close", "high", "low")),
            "operator": rng.choice(_VALUE_OPERATORS),
            "rhs": _random_indicator(rng, ("SMA", "EMA", "BBANDS")),
        }
    if kind == "channel":
        low = rng.randint(10, 50)
        return {
            **_random_indicator(rng, _OSCILLATORS),
            "operator": rng.choice(("inside_channel", "outside_channel", "entering_channel", "exiting_channel")),
            "channel": {"lower": low, "upper": low + rng.randint(5, 40)},
        }  # fmt: skip
    if kind == "movement":
        op = rng.choice(_MOVEMENTS)
        size = {"amount": rng.randint(1, 20)} if "pct" not in op else {"pct": rng.randint(1, 10)}
        return {
            **_random_indicator(rng, _OSCILLATORS),
            "operator": op,
            "bars": rng.randint(1, 10),
            **size,
        }
    return {
        **_random_indicator(rng, ("RSI", "MFI", "CCI", "MACD")),
        "operator": rng.choice(_DIVERGENCES),
        "pivot": rng.randint(2, 5),
        "lookback": rng.choice((30, 60, 90)),
    }


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class Command(StrictCommand):
    help = "Time one evaluation plan over many distinct conditions, cold and warm."
    # Times the engine: Django's checks would only add to the start-up.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--conditions", type=int, default=500, help="distinct conditions")
        parser.add_argument(
            "--candles",
            default=str(DEFAULT_CANDLES),
            metavar="FILE",
            help="SYMBOL-TIMEFRAME.csv (default: the ETHBTC 5m test klines)",
        )
        parser.add_argument("--bars", type=int, default=1000, help="candles of the file to use")
        parser.add_argument("--runs", type=int, default=20, help="warm runs to take the median of")
        parser.add_argument("--seed", type=int, default=1, help="seed of the random conditions")

    def handle(self, *args, **options):
        count, bars, runs = options["conditions"], options["bars"], options["runs"]
        if not 1 <= count <= MAX_CONDITIONS:
            raise InputError(f"--conditions must be between 1 and {MAX_CONDITIONS}")
        if bars < 1 or runs < 1:
            raise InputError("--bars and --runs must be at least 1")
        path = Path(options["candles"])
        symbol, timeframe = parse_file_name(path)
        if symbol is None or timeframe is None:
            raise InputError(f"{path}: name it SYMBOL-TIMEFRAME.csv")
        try:
            timeframe = normalize_timeframe(timeframe)
            candles = load_candles(path).head(bars).reset_index(drop=True)
            conditions = random_conditions(count, options["seed"], symbol, timeframe)
        except ValueError as exc:  # CandleFileError, ConditionError
            raise InputError(str(exc)) from None

        plan = EvaluationPlan(conditions)
        frames = {timeframe: candles}
        started = time.perf_counter()
        result = plan.run(frames, timeframe)
        first_run_ms = (time.perf_counter() - started) * 1000
        warm = []
        for _ in range(runs):
            started = time.perf_counter()
            plan.run(frames, timeframe)
            warm.append(time.perf_counter() - started)
        warm_ms = _median_ms(warm)
        uncached, cached = self._cold_runs(conditions, path, bars, timeframe)
        if {uncached["conditions"], cached["conditions"]} != {count}:
            raise CommandError("the cold runs evaluated other conditions than asked for")
        cold_ms = cached["import_ms"] + cached["run_ms"]

        stats: PlanStats = result.stats
        rows = [
            ("conditions (distinct)", f"{stats.conditions}"),
            ("condition evaluations", f"{stats.condition_evaluations}"),
            ("indicator computations", f"{stats.indicator_computations}"),
            ("operator calls", f"{stats.operator_calls}"),
            ("resamples", f"{stats.resamples}"),
            (
                "cold, empty numba cache",
                f"{uncached['import_ms'] + uncached['run_ms']:.1f} ms "
                f"(import {uncached['import_ms']:.1f} + run {uncached['run_ms']:.1f})",
            ),
            (
                "cold, numba cache on disk",
                f"{cold_ms:.1f} ms (import {cached['import_ms']:.1f} + run {cached['run_ms']:.1f})",
            ),
            ("first run in this process", f"{first_run_ms:.1f} ms"),
            (f"warm, median of {runs}", f"{warm_ms:.1f} ms"),
        ]
        width = max(len(label) for label, _ in rows)
        self.stdout.write(
            f"bench_plan: {count} conditions on {symbol} {timeframe}, {len(candles)} candles"
        )
        for label, value in rows:
            self.stdout.write(f"  {label:<{width}}  {value}")
        self.stdout.write(
            f"bench_plan: conditions={count} indicator_computations={stats.indicator_computations}"
            f" cold_ms={cold_ms:.1f} warm_ms={warm_ms:.1f}"
        )

    def _cold_runs(
        self, conditions: list[dict], candles: Path, bars: int, timeframe: str
    ) -> tuple[dict, dict]:
        """The plan in a fresh interpreter, first compiling numba's loops into
        an empty cache directory, then again loading them from it."""
        with tempfile.TemporaryDirectory(prefix="bench_plan") as scratch:
            job = Path(scratch) / "job.json"
            job.write_text(
                json.dumps({
                    "conditions": conditions,
                    "candles": str(candles.resolve()),
                    "bars": bars,
                    "timeframe": timeframe,
                })
            )  # fmt: skip
            cache = Path(scratch) / "numba-cache"
            cache.mkdir()
            return self._cold_run(job, cache), self._cold_run(job, cache)

    def _cold_run(self, job: Path, numba_cache: Path) -> dict:
        environment = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
        completed = subprocess.run(
            [sys.executable, "-c", _COLD_RUN, str(job)],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if completed.returncode != 0:
            last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise CommandError(f"the cold run failed: {last_line}")
        return json.loads(completed.stdout)
