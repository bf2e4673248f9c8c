"""Redis restarted under running workers and beat: everything it held (queued
tasks, queued marks, the kline cache) is gone, and still no trigger is lost.

The only test that stops the shared Redis server: other developers' tests use
it too, so the outage lasts about a second, and Redis is started again
whatever happens to the test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from alerts.models import Alert, AlertTrigger, Notification
from tests.factories import RegisteredAlertFactory
from tests.pipeline.conftest import FIVE_MINUTES, bar, wait_until

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(150),
]


def redis_address() -> tuple[str, int]:
    parts = urlsplit(settings.REDIS_URL)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def redis_answers() -> bool:
    host, port = redis_address()
    try:
        return redis.Redis(host=host, port=port, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


def start_redis() -> None:
    host, port = redis_address()
    # How scripts/ensure_services.sh starts it.
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            host,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
        capture_output=True,
        timeout=10,
    )


@pytest.fixture
def restartable_redis() -> Iterator[None]:
    host, _ = redis_address()
    if host not in ("127.0.0.1", "localhost") or not shutil.which("redis-server"):
        pytest.skip("needs the local redis-server on 127.0.0.1 to restart it")
    try:
        yield
    finally:
        if not redis_answers():
            start_redis()
        wait_until(redis_answers, 10, "Redis to answer again")


@contextmanager
def redis_down() -> Iterator[None]:
    host, port = redis_address()
    subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"],
        check=False,
        capture_output=True,
        timeout=10,
    )
    try:
        wait_until(lambda: not redis_answers(), 10, "Redis to stop")
        yield
    finally:
        start_redis()
        wait_until(redis_answers, 10, "Redis to start again")


def fired(alert: Alert) -> Counter:
    return Counter(
        int(opened.timestamp() * 1000)
        for opened in AlertTrigger.objects.filter(alert=alert).values_list(
            "bar_open_time", flat=True
        )
    )


def test_a_redis_restart_mid_run_loses_no_trigger(processes, stub, restartable_redis):
    # Given a worker and beat that have fired the first bar
    alert = RegisteredAlertFactory()
    processes.start_worker("worker")
    processes.start_beat()
    wait_until(
        lambda: Notification.objects.filter(trigger__alert=alert).count() == 1,
        30,
        "the first bar to fire",
        processes.logs,
    )

    # When a bar closes and, while its evaluation is queued or running, Redis
    # stops (losing everything it held); another bar closes while it is down
    stub.advance(FIVE_MINUTES)
    time.sleep(0.5)
    with redis_down():
        stub.advance(FIVE_MINUTES)
        time.sleep(0.5)
    stub.advance(FIVE_MINUTES)

    # Then every bar fires once and every trigger is told (the sweeper
    # re-sends what the outage took; beat would, every 15 s)
    every_bar = {bar(offset): 1 for offset in range(-1, 3)}
    processes.sweep_until(
        lambda: (
            set(fired(alert)) == set(every_bar) and Notification.objects.count() == len(every_bar)
        ),
        "every bar to fire and be told",
        timeout=60,
    )
    assert fired(alert) == every_bar
    assert Notification.objects.filter(trigger__alert=alert).count() == len(every_bar)
    # The outage did hit the running worker, and took the kline cache with it.
    worker_log = processes.log("worker")
    assert "Connection to broker lost" in worker_log
    assert worker_log.count("kline cache: loading 1000 ETHBTC 5m candles") == 2
