"""python manage.py bench_orders [--bots 1000] [--conditions 10] [--workers 2]

Trigger-to-order latency: bots sharing a few entry conditions on a live
(stub) Binance account, real workers, PostgreSQL and Redis in a scratch
database. The conditions' triggers are committed with their outbox rows, as
evaluate_symbol does, and dispatched; each bot's base order is timed from that
commit to its fill being recorded. It also checks that the stub holds exactly
one order per bot.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from alerts.management.commands.bench_pipeline import (
    REPO,
    START_MS,
    PipelineRun,
    percentile,
    redis_namespace,
    scratch_database,
    write_candles,
)
from alerts.models import OutboxMessage
from bots.dca import DCA_DEFAULTS
from bots.models import Bot, ExchangeAccount, Order
from conditions.models import ConditionSubscription, ConditionTrigger
from conditions.services import register_condition
from tradeeon.celery import app as celery_app
from tradeeon.cli import InputError, StrictCommand

# The defaults, with two triggered safety orders and a 1% take profit.
SETTINGS = {
    **DCA_DEFAULTS,
    "base_order_size": "0.01",
    "safety_order_size": "0.005",
    "max_safety_orders": 2,
    "take_profit": "1",
}


class OrderRun(PipelineRun):
    """The stub and the workers; no beat: the triggers are the benchmark's."""

    def __init__(self, *args, concurrency: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency

    def __enter__(self) -> OrderRun:
        manage = [sys.executable, str(REPO / "manage.py")]
        self.start(
            "stub",
            [
                *manage,
                "binance_stub",
                "--port",
                str(self.port),
                "--candles",
                str(self.candles),
                "--start",
                str(START_MS),
                "--speed",
                "0",
            ],
        )
        self.wait_for_stub()
        for index in range(self.workers):
            self.start(
                f"worker{index}",
                [
                    sys.executable, "-m", "celery", "-A", "tradeeon", "worker", "-Q", "default,evaluate",
                    "--concurrency", str(self.concurrency), "-n", f"orders{index}-{os.getpid()}@%h", "-l", "warning",
                    "--without-mingle", "--without-gossip", "--without-heartbeat",
                ],
            )  # fmt: skip
        return self


class Command(StrictCommand):
    help = "Trigger-to-order latency for bots sharing entry conditions (PostgreSQL, Redis, workers, the stub)."

    def add_arguments(self, parser):
        parser.add_argument("--bots", type=int, default=1000)
        parser.add_argument("--conditions", type=int, default=10)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--concurrency", type=int, default=2, help="processes per worker")
        parser.add_argument("--timeout", type=float, default=300)

    def handle(self, *args, **options):
        bots, conditions = options["bots"], options["conditions"]
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise InputError("bench_orders needs PostgreSQL (DATABASE_URL=postgres://...)")
        if not settings.REDIS_URL or not settings.CELERY_BROKER_URL.startswith("redis"):
            raise InputError("bench_orders needs Redis: set REDIS_URL and CELERY_BROKER_URL")
        if not 1 <= conditions <= bots <= 20_000 or not 1 <= options["workers"] <= 8:
            raise InputError("1 <= --conditions <= --bots <= 20000 and --workers 1..8 please")
        namespace = f"orders{os.getpid()}"
        with (
            scratch_database(f"tradeeon_bench_orders_{os.getpid()}") as database,
            redis_namespace(namespace),
            tempfile.TemporaryDirectory() as candles,
        ):
            symbol = write_candles(Path(candles), 1)[0]
            subscriptions = self.create_bots(symbol, bots, conditions)
            self.stdout.write(
                f"{bots} bots on {symbol} sharing {conditions} entry conditions; {options['workers']} worker(s) x {options['concurrency']}"
            )
            run = OrderRun(
                database,
                namespace,
                Path(candles),
                options["workers"],
                0,
                self.stdout,
                concurrency=options["concurrency"],
            )
            with run:
                time.sleep(3)  # workers up
                started = self.fire(symbol, subscriptions, namespace)
                latencies, stub_orders = self.wait_for_orders(
                    run, bots, started, options["timeout"]
                )
        self.report(bots, conditions, latencies, stub_orders)

    def create_bots(self, symbol: str, bots: int, conditions: int) -> list[int]:
        user = get_user_model().objects.create(username="bench-orders")
        account = ExchangeAccount.objects.create(
            user=user, name="stub", exchange="binance", api_key="k" * 64, api_secret="s" * 64
        )
        entries = [
            {
                "mode": "simple",
                "conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30 + k}],
            }
            for k in range(conditions)
        ]
        created = Bot.objects.bulk_create(
            Bot(
                user=user,
                account=account,
                name=f"bot {i}",
                symbol=symbol,
                base_timeframe="5m",
                status="running",
                settings={**SETTINGS, "entry": entries[i % conditions]},
            )
            for i in range(bots)
        )
        registered = [
            register_condition(entry["conditions"][0], symbol=symbol, timeframe="5m")[0]
            for entry in entries
        ]
        ConditionSubscription.objects.bulk_create(
            ConditionSubscription(
                user=user,
                bot=bot,
                condition=registered[i % conditions],
                bot_type="dca",
                bot_config={"role": "entry"},
            )
            for i, bot in enumerate(created)
        )
        return [c.pk for c in registered]

    def fire(self, symbol: str, condition_ids: list[str], namespace: str) -> float:
        """The conditions fire at one bar: trigger and outbox rows in one commit, then dispatch."""
        candle_time = datetime.fromtimestamp((START_MS - 300_000) / 1000, tz=UTC)
        with transaction.atomic():
            messages = []
            for cid in condition_ids:
                trigger = ConditionTrigger.objects.create(
                    condition_id=cid,
                    symbol=symbol,
                    timeframe="5m",
                    candle_time=candle_time,
                    subscribers_count=0,
                )
                messages.append(
                    OutboxMessage.objects.create(
                        topic="condition_trigger",
                        key=f"condition_trigger:{trigger.pk}",
                        payload={"condition_trigger_id": trigger.pk},
                        sent_at=timezone.now(),
                    )
                )
        started = time.time()
        with celery_app.connection_for_write(
            transport_options={"global_keyprefix": f"{namespace}:"}
        ) as connection:
            celery_app.send_task(
                "alerts.tasks.process_outbox_batch",
                ([m.pk for m in messages],),
                connection=connection,
            )
        return started

    def wait_for_orders(
        self, run: OrderRun, bots: int, started: float, timeout: float
    ) -> tuple[list[float], int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.check_alive()
            if Order.objects.filter(leg="base", status="filled").count() >= bots:
                break
            time.sleep(0.5)
        filled = list(
            Order.objects.filter(leg="base", status="filled").values_list("filled_at", flat=True)
        )
        if len(filled) < bots:
            raise InputError(
                f"only {len(filled)} of {bots} base orders filled within {timeout:g} s; logs in {run.log_dir}"
            )
        latencies = sorted((at.timestamp() - started) * 1000 for at in filled)
        return latencies, self.count_stub_orders(run)

    @staticmethod
    def count_stub_orders(run: OrderRun) -> int:
        """Base orders the stub accepted, from its request log."""
        import requests

        entries = requests.get(f"http://127.0.0.1:{run.port}/_stub/requests", timeout=10).json()
        return sum(
            1
            for entry in entries
            if entry.get("method") == "POST"
            and entry.get("path") == "/api/v3/order"
            and entry.get("status") == 200
            and "-base" in str(entry.get("params", {}).get("newClientOrderId", ""))
        )

    def report(self, bots: int, conditions: int, latencies: list[float], stub_orders: int) -> None:
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        self.stdout.write(f"  base orders filled                {len(latencies)}")
        self.stdout.write(f"  base orders the stub accepted     {stub_orders}")
        self.stdout.write(
            f"  trigger -> order filled           p50 {p50:8.0f} ms   p99 {p99:8.0f} ms   max {latencies[-1]:8.0f} ms"
        )
        self.stdout.write(
            f"bench_orders: bots={bots} conditions={conditions} p50_ms={p50:.0f} p99_ms={p99:.0f} stub_base_orders={stub_orders}"
        )
