"""What evaluations record for operators, as the status snapshot shows it, in
Redis (one round trip per evaluation) and in the caches of the embedded setup."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis
from django.core.cache import caches

from alerts.evaluation import EvaluationReport
from conditions import metrics

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["redis", "file", "locmem"])
def store(request, settings, namespace, tmp_path):
    """The default cache, as production (Redis) or the embedded setup has it."""
    backends = {
        "redis": {
            "BACKEND": "tradeeon.cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": namespace,
        },
        "file": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        },
        "locmem": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": namespace,
        },
    }
    settings.CACHES = {"default": backends[request.param]}
    return caches["default"]


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The metrics' clock, ten seconds into the current minute; tests move it."""
    now = [time.time() // 60 * 60 + 10]
    monkeypatch.setattr(metrics, "time", SimpleNamespace(time=lambda: now[0]))
    return now


def report(symbol: str, timeframe: str, **counts) -> EvaluationReport:
    return EvaluationReport(symbol, timeframe, **counts)


def test_counters_of_evaluations_add_up_in_the_status_snapshot(store, clock):
    metrics.record_evaluation(
        "ETHBTC",
        "5m",
        report("ETHBTC", "5m", bars=[1, 2], conditions=3, alert_triggers=1, condition_triggers=2),
    )
    metrics.record_evaluation("LTCBTC", "5m", report("LTCBTC", "5m", bars=[1], conditions=2))

    clock[0] += 60  # the averages count complete minutes only
    seen = metrics.snapshot()

    assert seen["evaluations_per_minute"] == (6 + 2) / metrics.WINDOW_MINUTES
    assert seen["triggers_per_minute"] == 3 / metrics.WINDOW_MINUTES


def test_each_evaluated_pair_is_listed_once_with_its_last_evaluation_time(store, clock):
    metrics.record_evaluation("ETHBTC", "5m", report("ETHBTC", "5m", duration_ms=12.345))
    metrics.record_evaluation("LTCBTC", "1h", report("LTCBTC", "1h", duration_ms=3.0))
    metrics.record_evaluation("ETHBTC", "5m", report("ETHBTC", "5m", duration_ms=7.891))

    assert metrics.snapshot()["evaluation_ms_per_pair"] == {"ETHBTC:5m": 7.89, "LTCBTC:1h": 3.0}


def test_what_is_recorded_reads_back_through_the_cache_api(store, clock):
    minute = int(clock[0] // 60)
    for _ in range(2):
        metrics.record_evaluation("ETHBTC", "5m", report("ETHBTC", "5m", duration_ms=4.5))

    runs = store.get(f"metrics:pair_runs:{minute}")
    assert runs == 2 and type(runs) is int
    assert store.get_many(["metrics:eval_ms:ETHBTC:5m"]) == {"metrics:eval_ms:ETHBTC:5m": 4.5}


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_recording_an_evaluation_in_redis_takes_one_round_trip(store, clock, monkeypatch):
    metrics.record_evaluation("ETHBTC", "5m", report("ETHBTC", "5m"))  # connects
    sent = []
    send = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(
        redis.connection.AbstractConnection,
        "send_packed_command",
        lambda connection, *args, **kwargs: sent.append(1) or send(connection, *args, **kwargs),
    )

    metrics.record_evaluation(
        "ETHBTC", "5m", report("ETHBTC", "5m", bars=[1], conditions=2, alert_triggers=1)
    )

    assert len(sent) == 1


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_a_pair_list_left_in_redis_by_an_older_version_does_not_get_in_the_way(store, clock):
    store.set("metrics:pairs", ["OLDBTC:5m"], timeout=None)

    metrics.record_evaluation("ETHBTC", "5m", report("ETHBTC", "5m", duration_ms=1.5))

    assert metrics.snapshot()["evaluation_ms_per_pair"] == {"ETHBTC:5m": 1.5}
