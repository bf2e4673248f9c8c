"""python manage.py bench [--seed 1] [--quick] [--users 1000] [--alerts 100000] ...

Measures shared evaluation against one evaluation per alert, on generated
users, alerts and candles that --seed fixes (see conditions/bench):

1. the seeds' scenario (1,000 users with 5 conditions each over 20 symbols):
   distinct conditions and indicator specs, one cycle shared against one
   evaluation per alert, and the ratio;
2. the scale cycle (100,000 alerts over 200 symbols and 3 timeframes, every
   candle closing at once) on every core: the engine alone, then with the
   database writes evaluate_symbol does, in a scratch PostgreSQL database;
   each the best of --scale-cycles cycles, every cycle's time shown;
3. end to end on Celery, Redis and PostgreSQL (10,000 alerts over 50
   symbols): from the tick to the last trigger committed and dispatched.

The last line is for machines:
bench: shared_vs_per_alert=<x>x cycle_100k_engine_s=<s> cycle_100k_with_db_s=<s> e2e_10k_s=<s>
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

from django.conf import settings

from conditions.bench.database import require_postgresql
from conditions.bench.database_cycle import measure_database_scale
from conditions.bench.end_to_end import run_end_to_end
from conditions.bench.scale import ScaleResult, measure_engine_scale, scale_scenario
from conditions.bench.seeds import SeedsResult, measure_seeds
from tradeeon.cli import InputError, StrictCommand

SEEDS_TIMEFRAMES = ("1h",)
SCALE_TIMEFRAMES = ("1h", "4h", "15m")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class Command(StrictCommand):
    help = "Shared evaluation against one evaluation per alert, at the seeds' scale and 100x."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=1, help="fixes every generated value")
        parser.add_argument(
            "--quick", action="store_true", help="skip the end-to-end part (Celery workers)"
        )
        parser.add_argument("--no-database", action="store_true", help="skip the database part")
        parser.add_argument("--users", type=int, default=1000, help="seeds' scenario users")
        parser.add_argument("--symbols", type=int, default=20, help="seeds' scenario symbols")
        parser.add_argument("--alerts", type=int, default=100_000, help="scale cycle alerts")
        parser.add_argument("--scale-symbols", type=int, default=200, help="scale symbols")
        parser.add_argument("--e2e-alerts", type=int, default=10_000, help="end-to-end alerts")
        parser.add_argument("--e2e-symbols", type=int, default=50, help="end-to-end symbols")
        parser.add_argument(
            "--processes", type=int, default=os.cpu_count() or 1, help="processes (cores) to use"
        )
        parser.add_argument(
            "--repeats",
            type=int,
            default=7,
            help="cycles timed, the best taken (per alert: at most 3)",
        )
        parser.add_argument(
            "--scale-cycles",
            type=int,
            default=3,
            help="scale cycles timed after the warm-up one, the best taken",
        )

    def handle(self, *args, **options):
        self.check_options(options)
        write = self.stdout.write
        processes = options["processes"]
        write(
            f"bench: seed {options['seed']}, {processes} process(es), "
            f"nproc {os.cpu_count()}, {cpu_model()}"
        )
        seeds = measure_seeds(
            seed=options["seed"],
            users=options["users"],
            symbols=options["symbols"],
            timeframes=SEEDS_TIMEFRAMES,
            repeats=options["repeats"],
        )
        self.report_seeds(seeds, options)

        scenario = scale_scenario(
            seed=options["seed"],
            alerts=options["alerts"],
            symbols=options["scale_symbols"],
            timeframes=SCALE_TIMEFRAMES,
            cycles=options["scale_cycles"],
        )
        engine = measure_engine_scale(scenario, processes)
        self.report_scale("engine only", engine, len(scenario.pairs), options, processes)
        with_db = None
        if not options["no_database"]:
            with_db = measure_database_scale(scenario, processes)
            self.report_scale(
                "with database writes", with_db, len(scenario.pairs), options, processes
            )

        e2e = None
        if not options["quick"]:
            e2e = run_end_to_end(
                seed_value=options["seed"],
                alerts=options["e2e_alerts"],
                symbols=options["e2e_symbols"],
                workers=processes,
                stdout=self.stdout,
            )
            self.report_end_to_end(e2e, options, processes)

        write(
            f"bench: shared_vs_per_alert={seeds.ratio:.1f}x "
            f"cycle_100k_engine_s={engine.wall_s:.3f} "
            f"cycle_100k_with_db_s={'skipped' if with_db is None else f'{with_db.wall_s:.3f}'} "
            f"e2e_10k_s={'skipped' if e2e is None else f'{e2e["seconds"]:.3f}'}"
        )

    def check_options(self, options: dict) -> None:
        for name in ("users", "symbols", "alerts", "scale_symbols", "e2e_alerts", "e2e_symbols"):
            if options[name] < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if not 1 <= options["processes"] <= 64 or not 1 <= options["repeats"] <= 100:
            raise InputError("--processes must be 1..64 and --repeats 1..100")
        if not 1 <= options["scale_cycles"] <= 10:
            raise InputError("--scale-cycles must be 1..10")
        for name in ("symbols", "scale_symbols", "e2e_symbols"):
            if options[name] > 1000:
                raise InputError(f"--{name.replace('_', '-')} must be at most 1000")
        if not options["no_database"]:
            require_postgresql("the database part of bench")
        if not options["quick"]:
            require_postgresql("the end-to-end part of bench")
            if not settings.REDIS_URL or not settings.CELERY_BROKER_URL.startswith("redis"):
                raise InputError(
                    "the end-to-end part of bench needs Redis (REDIS_URL and "
                    "CELERY_BROKER_URL=redis://...); or pass --quick"
                )

    def row(self, label: str, value: str) -> None:
        self.stdout.write(f"  {label:<44} {value}")

    def report_seeds(self, seeds: SeedsResult, options: dict) -> None:
        stats = seeds.stats
        self.stdout.write(
            f"\nSeeds' scenario: {stats.users} users x 5 conditions, {options['symbols']} symbols, "
            f"{' '.join(SEEDS_TIMEFRAMES)}; candles: real 5m klines, scaled, 1,000 per series"
        )
        self.row("alerts / condition references", f"{stats.alerts} / {stats.condition_references}")
        self.row("distinct conditions", str(stats.distinct_conditions))
        self.row("distinct indicator specs", str(stats.distinct_indicator_specs))
        shared = seeds.shared
        self.row(
            f"shared cycle (best of {seeds.repeats})",
            f"{seeds.shared_s * 1000:.1f} ms  (indicators {shared.phases.indicators * 1000:.1f}, "
            f"conditions {shared.phases.conditions * 1000:.1f}, "
            f"playbooks and the rest {shared.phases.playbooks * 1000:.1f})",
        )
        self.row(
            f"one evaluation per alert (best of {seeds.per_alert_repeats})",
            f"{seeds.per_alert_s * 1000:.1f} ms  "
            f"({seeds.per_alert.indicator_computations} indicator computations)",
        )
        self.row("shared vs per alert", f"{seeds.ratio:.1f}x  ({len(shared.fired)} alerts fire)")

    def report_scale(
        self, title: str, result: ScaleResult, pairs: int, options: dict, processes: int
    ) -> None:
        outcome, phases = result.outcome, result.outcome.phases
        self.stdout.write(
            f"\nScale, {title}: {options['alerts']} alerts, {options['scale_symbols']} symbols x "
            f"{' '.join(SCALE_TIMEFRAMES)} ({pairs} pairs), every candle closes; "
            f"{processes} process(es)"
        )
        walls = result.cycle_walls
        if len(walls) == 1:
            self.row("cycle, wall", f"{result.wall_s:.3f} s")
        else:
            self.row(
                f"cycle, wall (best of {len(walls)})",
                f"{result.wall_s:.3f} s  (cycles in order: "
                f"{', '.join(f'{seconds:.3f}' for seconds in walls)} s; "
                f"median {statistics.median(walls):.3f} s)",
            )
        self.row(
            "per process, busy",
            ", ".join(f"{seconds:.3f} s" for seconds in result.shard_seconds),
        )
        self.row(
            "distinct conditions / indicator specs",
            f"{outcome.condition_evaluations} / {outcome.indicator_computations}",
        )
        parts = [
            ("candles", phases.candles),
            ("indicators", phases.indicators),
            ("conditions", phases.conditions),
            ("playbooks", phases.playbooks),
            ("database", phases.database),
        ]
        self.row(
            "where the time goes (all processes)",
            ", ".join(f"{name} {seconds:.3f} s" for name, seconds in parts if seconds)
            + f" (sum {sum(seconds for _, seconds in parts):.3f} s)",
        )
        if outcome.alert_triggers or outcome.condition_triggers:
            self.row(
                "triggers written",
                f"{outcome.alert_triggers} alert, {outcome.condition_triggers} condition",
            )
        else:
            self.row("alerts that fire", str(len(outcome.fired)))

    def report_end_to_end(self, e2e: dict, options: dict, processes: int) -> None:
        self.stdout.write(
            f"\nEnd to end (Celery, Redis, PostgreSQL): {options['e2e_alerts']} alerts, "
            f"{options['e2e_symbols']} symbols x 5m, {processes} worker(s)"
        )
        self.row("tick -> last trigger committed and dispatched", f"{e2e['seconds']:.3f} s")
        for key, label in (
            ("first_trigger_s", "tick -> first trigger committed"),
            ("last_trigger_s", "tick -> last trigger committed"),
            ("evaluated_s", "tick -> every pair evaluated"),
            ("dispatched_s", "tick -> last outbox message done"),
        ):
            if e2e[key] is not None:
                self.row(label, f"{e2e[key]:.3f} s")
        self.row(
            "alert triggers / outbox messages done", f"{e2e['alert_triggers']} / {e2e['outbox']}"
        )
        self.row("evaluate_symbol, summed over pairs", f"{e2e['evaluation_ms'] / 1000:.3f} s")
