"""End to end on Celery, Redis and PostgreSQL: one bar closes for every pair.

The processes are `bench_pipeline`'s (the Binance stub serving copies of the
real 5m klines under generated symbol names, beat, and worker processes, on
a scratch database and a Redis namespace of their own); the alerts are this
benchmark's scenario on those symbols. With the stub's clock frozen, every
pair is evaluated bar after bar for a few bars (kline caches loaded, alerts
normalized and plans compiled in the workers, outbox drained). Then the
clock jumps just past the next close and a tick is sent: the measure runs
from that tick to the last trigger of the bar committed and its outbox
message done.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from django.core.cache import caches
from django.core.management.base import CommandError
from django.db.models import Max, Min
from django.test.utils import override_settings

from alerts.management.commands import bench_pipeline as pipeline
from alerts.models import AlertTrigger, OutboxMessage
from conditions.models import EvaluationCursor
from tradeeon.celery import app as celery_app

from .database import links_of, seed
from .scenario import generate_alerts, normalized

TIMEFRAME = pipeline.TIMEFRAME
# Bars evaluated before the measured one: with no affinity between pairs and
# workers, it takes a few before each worker has seen most pairs (normalized
# their alerts, compiled their plans), as workers that have been running have.
WARMUP_BARS = 3


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def run_end_to_end(*, seed_value: int, alerts: int, symbols: int, workers: int, stdout) -> dict:
    """Seconds from the tick to the last trigger committed and dispatched."""
    namespace = f"benche2e{int(time.time() * 1000) % 10_000_000}"
    bar_ms = pipeline.BAR_MS
    # The last bar closed when the stub starts, then WARMUP_BARS more, then
    # the measured one.
    first_open = pipeline.START_MS - pipeline.START_MS % bar_ms - bar_ms
    previous_open = first_open + WARMUP_BARS * bar_ms
    closing_open = previous_open + bar_ms
    with (
        pipeline.scratch_database(f"tradeeon_bench_e2e_{int(time.time())}") as database,
        pipeline.redis_namespace(namespace),
        tempfile.TemporaryDirectory() as candles,
    ):
        names = pipeline.write_candles(Path(candles), symbols)
        prices = _closes_at(Path(candles), names, previous_open)
        specs = generate_alerts(
            seed=seed_value,
            users=alerts,
            alerts_per_user=1,
            symbols=names,
            timeframes=(TIMEFRAME,),
            reference_prices=prices,
        )
        seed(specs, links_of(normalized(specs)))
        with pipeline.PipelineRun(database, namespace, Path(candles), workers, 0, stdout) as run:
            run.wait_until_evaluated(names, first_open, 600)
            for bar_open in range(first_open + bar_ms, previous_open + 1, bar_ms):
                run.clock(time_ms=bar_open + bar_ms + 500)
                run.wait_until_evaluated(names, bar_open, 600)
            run.clock(time_ms=closing_open + bar_ms + 500)
            started = time.time()
            _send_tick(namespace)
            run.wait_until_evaluated(names, closing_open, 600)
        bar = _datetime(closing_open)
        triggers = AlertTrigger.objects.filter(bar_open_time=bar)
        done = OutboxMessage.objects.filter(created_at__gte=_datetime(int(started * 1000)))
        evaluated = EvaluationCursor.objects.filter(last_bar=bar).aggregate(last=Max("updated_at"))
        moments = {
            "first_trigger": triggers.aggregate(at=Min("fired_at"))["at"],
            "last_trigger": triggers.aggregate(at=Max("fired_at"))["at"],
            "evaluated": evaluated["last"],
            "dispatched": done.aggregate(at=Max("done_at"))["at"],
        }
        seconds = {
            name: None if moment is None else moment.timestamp() - started
            for name, moment in moments.items()
        }
        known = [value for value in seconds.values() if value is not None]
        with override_settings(CACHES=pipeline.namespaced_cache(namespace)):
            # What each pair's last evaluation took, as the workers recorded it.
            durations = caches["default"].get_many(
                [f"metrics:eval_ms:{name}:{TIMEFRAME}" for name in names]
            )
        return {
            "evaluation_ms": sum(durations.values()),
            "seconds": max(known) if known else 0.0,
            "alert_triggers": triggers.count(),
            "outbox": done.count(),
            **{f"{name}_s": value for name, value in seconds.items()},
        }


def _closes_at(directory: Path, names: list[str], open_ms: int) -> dict[str, float]:
    from conditions.engine.candles import load_candles

    prices = {}
    for name in names:
        candles = load_candles(directory / f"{name}-{TIMEFRAME}.csv")
        closes = candles.loc[candles["open_time"] <= open_ms, "close"]
        if closes.empty:
            raise CommandError(f"{name}: no candle before the measured bar")
        prices[name] = float(closes.iloc[-1])
    return prices


def _send_tick(namespace: str) -> None:
    """What beat sends every second, sent now rather than up to a second later."""
    with celery_app.connection_for_write(
        transport_options={"global_keyprefix": f"{namespace}:"}
    ) as connection:
        celery_app.send_task("alerts.tasks.tick", connection=connection)
