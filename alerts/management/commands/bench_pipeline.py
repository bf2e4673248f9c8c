"""python manage.py bench_pipeline [--alerts 1000] [--symbols 20] [--workers 2] [--bars N]

Measures the live pipeline as production runs it: PostgreSQL, Redis, beat,
Celery workers, and the Binance stub serving copies of the real candle files
under generated symbol names. Two figures:

- latency from a candle's close to the in-app notification, p50 and p99. The
  close is the stub's time, turned into wall time through the stub's speed;
  the notification's time is its row's created_at;
- what one tick costs (the body of alerts.tasks.tick: due_pairs) with 200
  symbols and nothing due.

The stub's clock stands still while beat's first ticks load every kline cache,
then runs at --speed for --bars bar closes and stops, and the run drains. It
prints a table and, last, one machine-readable line:
`bench_pipeline: alerts=<n> symbols=<n> p50_ms=<x> p99_ms=<y> tick_200_idle_ms=<z>`.

Everything happens in a scratch database (tradeeon_bench_<pid>, dropped at
the end) and under a Redis key prefix of its own, so real data is never
touched. Subprocess logs go to var/bench-logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psycopg
import redis
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.db import connection, connections
from django.test.utils import override_settings

from alerts.models import Alert, AlertTrigger, Notification, OutboxMessage
from alerts.scheduling import due_pairs, previous_open
from conditions.engine.playbook import normalize_alert
from conditions.engine.timeframes import bar_open_floor, timeframe_ms
from conditions.models import Condition, EvaluationCursor
from conditions.services import condition_type
from tradeeon.cli import InputError, StrictCommand

REPO = Path(settings.BASE_DIR)
CANDLE_FILES = sorted((REPO / "tests" / "data" / "klines").glob("*-5m.csv"))
TIMEFRAME = "5m"
BAR_MS = timeframe_ms(TIMEFRAME)
# A minute before the 12:00 bar closes, a week into the files (1000 bars of history).
START_MS = int(datetime(2018, 1, 17, 12, 4, tzinfo=UTC).timestamp() * 1000)
TICK_SYMBOLS = 200
TICK_RUNS = 50
USERS = 50


def alert_conditions(k: int) -> dict:
    """The k-th generated conditionConfig of a symbol: common alerts, with
    thresholds and periods varied so the registry holds many distinct
    conditions that share indicators, as real users' alerts do. The first
    holds at every bar, so every bar close is measured at least once a symbol."""
    if k == 0:
        return {"mode": "simple", "conditions": [{"type": "price", "operator": ">", "value": 0}]}
    ema = {"indicator": "EMA", "component": "EMA", "settings": {"period": (10, 20, 50)[k % 3]}}
    choices = [
        {"indicator": "RSI", "operator": "<", "value": 30 + 5 * (k % 4)},
        {"indicator": "RSI", "operator": ">", "value": 55 + 5 * (k % 4)},
        {
            "type": "price",
            "operator": "crosses_above",
            "compareWith": "indicator_component",
            "rhs": ema,
        },
        {
            "type": "price",
            "operator": "crosses_below",
            "compareWith": "indicator_component",
            "rhs": ema,
        },
        {"indicator": "MACD", "component": "histogram", "operator": "crosses_above", "value": 0},
        {"indicator": "BBANDS", "component": "percent_b", "operator": "<", "value": 0.1 * (k % 3)},
    ]
    if k % 7 == 6:
        return {
            "mode": "playbook",
            "gateLogic": "ALL",
            "conditions": [
                {"condition": choices[0], "validityDuration": 3},
                {"condition": choices[2]},
            ],
        }
    return {"mode": "simple", "conditions": [choices[k % len(choices)]]}


def symbol_name(index: int, source: Path) -> str:
    return f"S{index:03d}{source.name.split('-')[0]}"[:20]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Latencies:
    bars: int
    triggers: list[float]  # close -> alert trigger row, ms
    notifications: list[float]  # close -> notification row, ms
    per_bar: dict[int, list[float]]  # close (stub ms) -> its notifications' latencies


class Command(StrictCommand):
    help = (
        "Benchmark the live pipeline (PostgreSQL, Redis, beat, workers, the Binance stub) "
        "in a scratch database: candle close to notification p50/p99, and the idle tick."
    )

    def add_arguments(self, parser):
        parser.add_argument("--alerts", type=int, default=1000, help="alerts (default 1000)")
        parser.add_argument("--symbols", type=int, default=20, help="symbols (default 20)")
        parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
        parser.add_argument("--bars", type=int, default=8, help="bar closes measured (default 8)")
        parser.add_argument(
            "--speed",
            type=float,
            default=30,
            help="stub clock speed (default 30: a 5m bar closes every 10 s, time enough "
            "to finish one before the next)",
        )

    def handle(self, *args, **options):
        alerts, symbols, workers, bars = (
            options[name] for name in ("alerts", "symbols", "workers", "bars")
        )
        speed = options["speed"]
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise InputError(
                "bench_pipeline needs PostgreSQL (DATABASE_URL=postgres://...), not "
                f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
            )
        if not settings.REDIS_URL or not settings.CELERY_BROKER_URL.startswith("redis"):
            raise InputError("bench_pipeline needs Redis: set REDIS_URL and CELERY_BROKER_URL")
        if not 1 <= symbols <= TICK_SYMBOLS:
            raise InputError(f"--symbols must be between 1 and {TICK_SYMBOLS}, got {symbols}")
        if alerts < symbols:
            raise InputError(f"--alerts must be at least --symbols ({symbols}), got {alerts}")
        if not 1 <= workers <= 16 or not 1 <= bars <= 500 or not 0 < speed <= 600:
            raise InputError("--workers 1..16, --bars 1..500 and --speed in (0, 600] please")

        namespace = f"bench{os.getpid()}"
        with (
            scratch_database(f"tradeeon_bench_{os.getpid()}") as database,
            redis_namespace(namespace),
            tempfile.TemporaryDirectory() as candles,
        ):
            names = write_candles(Path(candles), symbols)
            self.stdout.write(
                f"Scratch database {database}; {alerts} alerts on {symbols} symbols, "
                f"{workers} worker(s), {bars} bars at {speed:g}x"
            )
            create_alerts(names, alerts)
            with PipelineRun(
                database, namespace, Path(candles), workers, speed, self.stdout
            ) as run:
                latencies = run.measure(names, bars)
                frozen_ms = run.stub_time_ms()
            tick_ms, tick_alerts = self.measure_tick(names, alerts, frozen_ms, namespace)
        self.report(alerts, symbols, speed, latencies, tick_ms, tick_alerts)

    def measure_tick(
        self, names: list[str], alerts: int, now_ms: int, namespace: str
    ) -> tuple[list[float], int]:
        """due_pairs with TICK_SYMBOLS symbols, every pair evaluated up to its
        last closed bar: (milliseconds per run, alerts at the time)."""
        per_symbol = max(1, alerts // len(names))
        more = [f"T{index:03d}IDLE" for index in range(TICK_SYMBOLS - len(names))]
        create_alerts(more, per_symbol * len(more))
        last_closed = previous_open(int(bar_open_floor(now_ms, TIMEFRAME)), TIMEFRAME)
        EvaluationCursor.objects.all().delete()
        EvaluationCursor.objects.bulk_create(
            EvaluationCursor(
                symbol=symbol,
                timeframe=TIMEFRAME,
                last_bar=datetime.fromtimestamp(last_closed / 1000, UTC),
            )
            for symbol in [*names, *more]
        )
        with connection.cursor() as cursor:
            # What autovacuum does to tables in use; freshly bulk-loaded ones
            # have no statistics and would make the tick look slower than it is.
            cursor.execute("VACUUM ANALYZE")
        with override_settings(CACHES=namespaced_cache(namespace)):
            if due_pairs(now_ms):
                raise CommandError("the idle tick found pairs due; the measurement is wrong")
            for _ in range(5):
                due_pairs(now_ms)
            timings = []
            for _ in range(TICK_RUNS):
                started = time.perf_counter()
                due_pairs(now_ms)
                timings.append((time.perf_counter() - started) * 1000)
        return timings, Alert.objects.count()

    def report(
        self,
        alerts: int,
        symbols: int,
        speed: float,
        latencies: Latencies,
        tick_ms: list[float],
        tick_alerts: int,
    ) -> None:
        write = self.stdout.write
        p50, p99 = percentile(latencies.notifications, 50), percentile(latencies.notifications, 99)
        tick = statistics.median(tick_ms)
        write("")
        write("  bar close (stub time)   notifications   p50 ms    max ms")
        for close_ms, values in sorted(latencies.per_bar.items()):
            closed = datetime.fromtimestamp(close_ms / 1000, UTC)
            write(
                f"  {closed:%Y-%m-%d %H:%M}        {len(values):13}   "
                f"{percentile(values, 50):6.0f}   {max(values):7.0f}"
            )
        write(f"  {'measured':<34} {latencies.bars} bar closes, {speed:g}x")
        write(f"  {'alert triggers':<34} {len(latencies.triggers)}")
        write(f"  {'notifications':<34} {len(latencies.notifications)}")
        for label, values in (
            ("close -> alert trigger", latencies.triggers),
            ("close -> notification", latencies.notifications),
        ):
            write(
                f"  {label:<34} p50 {percentile(values, 50):7.0f} ms   "
                f"p99 {percentile(values, 99):7.0f} ms   max {max(values, default=float('nan')):7.0f} ms"
            )
        write(
            f"  {f'tick, {TICK_SYMBOLS} symbols, nothing due':<34} median {tick:7.2f} ms   "
            f"p99 {percentile(tick_ms, 99):7.2f} ms   ({tick_alerts} alerts)"
        )
        write(
            f"bench_pipeline: alerts={alerts} symbols={symbols} p50_ms={p50:.0f} "
            f"p99_ms={p99:.0f} tick_{TICK_SYMBOLS}_idle_ms={tick:.2f}"
        )


# --- set-up ----------------------------------------------------------------------


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """Create `name`, point this process at it, migrate; drop it afterwards."""
    db = settings.DATABASES["default"]
    server = {
        "dbname": "postgres",
        "user": db["USER"] or None,
        "password": db["PASSWORD"] or None,
        "host": db["HOST"] or None,
        "port": db["PORT"] or None,
    }
    original = db["NAME"]
    with psycopg.connect(**server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    connections.close_all()
    db["NAME"] = connection.settings_dict["NAME"] = name
    try:
        call_command("migrate", interactive=False, verbosity=0)
        yield name
    finally:
        connections.close_all()
        db["NAME"] = connection.settings_dict["NAME"] = original
        with psycopg.connect(**server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def namespaced_cache(namespace: str) -> dict:
    return {
        "default": {
            "BACKEND": "tradeeon.cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": namespace,
        }
    }


@contextmanager
def redis_namespace(namespace: str) -> Iterator[None]:
    try:
        yield
    finally:
        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def write_candles(directory: Path, symbols: int) -> list[str]:
    """Copies of the real 5m candle files under generated symbol names."""
    names = []
    for index in range(symbols):
        source = CANDLE_FILES[index % len(CANDLE_FILES)]
        name = symbol_name(index, source)
        shutil.copyfile(source, directory / f"{name}-{TIMEFRAME}.csv")
        names.append(name)
    return names


def create_alerts(symbols: list[str], count: int) -> None:
    """`count` alerts spread over `symbols` and USERS users, saved as save_alert
    would (normalized, their conditions registered), in bulk."""
    User = get_user_model()
    users = list(User.objects.filter(username__startswith="bench"))
    if not users:
        users = User.objects.bulk_create(User(username=f"bench{i}") for i in range(USERS))
    canonicals: dict[str, dict] = {}
    alerts, links = [], []
    for k in range(count):
        symbol = symbols[k % len(symbols)]
        config = alert_conditions(k // len(symbols))
        normalized = normalize_alert(
            {"symbol": symbol, "base_timeframe": TIMEFRAME, "conditionConfig": config}
        )
        canonicals.update((step.condition_id, step.canonical) for step in normalized.steps)
        alerts.append(
            Alert(
                user=users[k % len(users)],
                name=f"bench {k}",
                symbol=symbol,
                base_timeframe=TIMEFRAME,
                condition_config=config,
            )
        )
        links.append(normalized.condition_ids)
    # As conditions.services.register_canonical would, thousands at a time.
    Condition.objects.bulk_create(
        (
            Condition(
                condition_id=cid,
                condition_type=condition_type(canonical),
                symbol=canonical["symbol"],
                timeframe=canonical["timeframe"],
                indicator_config=canonical,
            )
            for cid, canonical in canonicals.items()
        ),
        batch_size=1000,
        ignore_conflicts=True,
    )
    created = Alert.objects.bulk_create(alerts, batch_size=500)
    Alert.conditions.through.objects.bulk_create(
        (
            Alert.conditions.through(alert_id=alert.pk, condition_id=cid)
            for alert, ids in zip(created, links, strict=True)
            for cid in ids
        ),
        batch_size=1000,
    )


# --- the run -----------------------------------------------------------------------


class PipelineRun:
    """The stub, beat and the workers as subprocesses on the scratch database."""

    def __init__(
        self,
        database: str,
        namespace: str,
        candles: Path,
        workers: int,
        speed: float,
        stdout: OutputWrapper,
    ) -> None:
        self.workers = workers
        self.speed = speed
        self.stdout = stdout
        self.port = free_port()
        self.log_dir = Path(settings.VAR_DIR) / "bench-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        db = settings.DATABASES["default"]
        credentials = quote(db["USER"] or "") + (
            ":" + quote(db["PASSWORD"]) if db["PASSWORD"] else ""
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{database}",
            "CACHE_KEY_PREFIX": namespace,
            "CELERY_REDIS_KEY_PREFIX": f"{namespace}:",
            "BINANCE_API_URL": f"http://127.0.0.1:{self.port}/api",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            # This process ran the system checks before the command started.
            "CELERY_SKIP_CHECKS": "1",
        }
        self.candles = candles
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> PipelineRun:
        manage = [sys.executable, str(REPO / "manage.py")]
        celery = [sys.executable, "-m", "celery", "-A", "tradeeon"]
        self.start(
            "stub",
            [
                *manage,
                "binance_stub",
                *("--port", str(self.port), "--candles", str(self.candles)),
                *("--start", str(START_MS), "--speed", "0"),
            ],
        )
        self.wait_for_stub()
        for index in range(self.workers):
            self.start(
                f"worker{index}",
                [
                    *celery,
                    *("worker", "-Q", "default,evaluate", "--concurrency", "1"),
                    *("-n", f"bench{index}-{os.getpid()}@%h", "-l", "warning"),
                    *("--without-mingle", "--without-gossip", "--without-heartbeat"),
                ],
            )
        self.start(
            "beat", [*celery, "beat", "-l", "warning", "-s", str(self.log_dir / "beat-schedule")]
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        connections.close_all()

    def start(self, name: str, command: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise CommandError(
                    f"the {name} process stopped (exit {process.returncode}); "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def wait_for_stub(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive()
            with suppress(requests.ConnectionError):
                self.stub_time_ms()
                return
            time.sleep(0.1)
        raise CommandError("the Binance stub did not start within 30 s")

    def clock(self, **change: object) -> dict:
        url = f"http://127.0.0.1:{self.port}/_stub/clock"
        if change:
            return requests.post(url, json=change, timeout=5).json()
        return requests.get(url, timeout=5).json()

    def stub_time_ms(self) -> int:
        return int(self.clock()["serverTime"])

    def wait_until_evaluated(self, symbols: list[str], bar_open_ms: int, timeout: float) -> None:
        """Every pair evaluated up to `bar_open_ms` and nothing left in the outbox."""
        last_bar = datetime.fromtimestamp(bar_open_ms / 1000, UTC)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            done = EvaluationCursor.objects.filter(
                symbol__in=symbols, timeframe=TIMEFRAME, last_bar__gte=last_bar
            ).count()
            if done == len(symbols) and not OutboxMessage.objects.filter(done_at=None).exists():
                return
            time.sleep(0.25)
        raise CommandError(
            f"the pipeline did not catch up within {timeout:g} s; see {self.log_dir}"
        )

    def measure(self, symbols: list[str], bars: int) -> Latencies:
        started = time.monotonic()
        # Frozen: beat's first ticks load every kline cache and fire the last bar.
        self.wait_until_evaluated(symbols, START_MS - START_MS % BAR_MS - BAR_MS, 180)
        self.stdout.write(f"Warmed up in {time.monotonic() - started:.1f} s; running the clock")
        before = time.time()
        anchor = self.clock(speed=self.speed)
        anchor_wall_ms = (before + time.time()) / 2 * 1000
        anchor_ms = int(anchor["serverTime"])
        first_close = anchor_ms - anchor_ms % BAR_MS + BAR_MS
        last_close = first_close + (bars - 1) * BAR_MS
        # Stop the clock just after the last measured close, then let the work drain.
        time.sleep((last_close - anchor_ms) / self.speed / 1000 + 0.05)
        self.check_alive()
        self.clock(speed=0)
        self.wait_until_evaluated(symbols, last_close - BAR_MS, 180)

        def wall_ms(stub_ms: int) -> float:
            return anchor_wall_ms + (stub_ms - anchor_ms) / self.speed

        measured = AlertTrigger.objects.filter(
            bar_open_time__gte=datetime.fromtimestamp((first_close - BAR_MS) / 1000, UTC),
            bar_open_time__lte=datetime.fromtimestamp((last_close - BAR_MS) / 1000, UTC),
        )
        triggers, notifications, per_bar = [], [], {}
        for bar_open, fired_at in measured.values_list("bar_open_time", "fired_at"):
            close_ms = int(bar_open.timestamp() * 1000) + BAR_MS
            triggers.append(fired_at.timestamp() * 1000 - wall_ms(close_ms))
        for bar_open, created_at in Notification.objects.filter(trigger__in=measured).values_list(
            "trigger__bar_open_time", "created_at"
        ):
            close_ms = int(bar_open.timestamp() * 1000) + BAR_MS
            notifications.append(created_at.timestamp() * 1000 - wall_ms(close_ms))
            per_bar.setdefault(close_ms, []).append(notifications[-1])
        if not notifications:
            raise CommandError(f"no notification for the measured bars; see {self.log_dir}")
        return Latencies(bars, triggers, notifications, per_bar)
