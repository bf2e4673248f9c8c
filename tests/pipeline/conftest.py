"""The live pipeline against real services: PostgreSQL, Redis, the Binance stub
on 127.0.0.1, and (for `worker` tests) real Celery workers and beat started as
subprocesses.

Every test gets a Redis namespace of its own: the cache key prefix of the test
process and of its workers, and the broker's key prefix, so queues, kline
caches and queued marks never leak from one test into another. Its keys are
deleted afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.db import connection

from alerts import evaluation
from conditions.marketdata.replay import ReplayMarket
from conditions.marketdata.stub import BinanceStub, run_stub
from tests.conftest import REPO
from tradeeon.celery import app as celery_app

KLINES_DIR = REPO / "tests" / "data" / "klines"
CANDLE_FILES = [KLINES_DIR / "ETHBTC-5m.csv", KLINES_DIR / "LTCBTC-5m.csv"]

FIVE_MINUTES = 5 * 60_000
# 2018-01-17 12:00 UTC: a week into the files, so 1000 bars of history exist.
# The stub starts half-way through that bar, years away from the local clock.
BAR_12_00 = 1516190400000
START = BAR_12_00 + FIVE_MINUTES // 2


def bar(offset: int) -> int:
    """Open time (ms) of the 5m bar `offset` bars after the one opening at 12:00."""
    return BAR_12_00 + offset * FIVE_MINUTES


@pytest.fixture(autouse=True)
def _needs_postgresql_and_redis() -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not (
        settings.REDIS_URL
    ):
        pytest.skip("the pipeline tests need PostgreSQL and Redis (run them with make test)")


@pytest.fixture(scope="session")
def replay_market() -> ReplayMarket:
    return ReplayMarket.from_paths(CANDLE_FILES)


@pytest.fixture
def stub(replay_market: ReplayMarket) -> Iterator[BinanceStub]:
    """The Binance stub on 127.0.0.1, its clock frozen half-way through the 12:00 bar."""
    with run_stub(replay_market, speed=0, start=START) as running:
        yield running


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Redis key prefix of this test's own; everything under it is deleted afterwards."""
    name = f"tpipe{uuid.uuid4().hex[:10]}"
    yield name
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass  # a test that stopped Redis restarts it; its keys went with it


@pytest.fixture
def live(settings, stub: BinanceStub, namespace: str) -> Iterator[BinanceStub]:
    """The pipeline in this process: market data from the stub over HTTP, the
    shared cache in Redis under this test's namespace, and Celery tasks run at
    once in this process (the worker tests run them in real workers)."""
    settings.BINANCE_API_URL = stub.url
    settings.CACHES = {
        "default": {
            "BACKEND": "tradeeon.cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": namespace,
        }
    }
    settings.WEBHOOK_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    evaluation.market.cache_clear()
    eager = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield stub
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = eager
    evaluation.market.cache_clear()


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] = str
) -> Any:
    """Poll until `condition()` is truthy; fail naming `what` (and `explain()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{explain()}")
        time.sleep(0.1)


# --- a user's webhook endpoint ----------------------------------------------------


@dataclass
class ReceivedRequest:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers each POST with the next entry of `answers` (then 200):
    an HTTP status, ("hang", seconds) for no answer at all, ("trickle", seconds)
    for a 200 whose body comes a byte at a time, or "block" to hold the request
    until `release` is set. Records every request it gets."""

    answers: list = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tradeeon"

    def next_answer(self, request: ReceivedRequest) -> object:
        with self.lock:
            self.requests.append(request)
            return self.answers.pop(0) if self.answers else 200

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


class _ReceiverHandler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.receiver.next_answer(
            ReceivedRequest(time.monotonic(), self.path, dict(self.headers.items()), body)
        )
        if answer == "block":
            self.receiver.release.wait(60)
            answer = 200
        if isinstance(answer, tuple) and answer[0] == "hang":
            time.sleep(answer[1])
            return
        if isinstance(answer, tuple) and answer[0] == "trickle":
            self.trickle(answer[1])
            return
        try:
            self.send_response(int(answer))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the caller is gone (killed, or timed out)

    def trickle(self, seconds: float) -> None:
        """200 at once, then a body a byte at a time, each in time to renew a read timeout."""
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(10**6))
            self.end_headers()
            self.wfile.flush()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    handler = type("Handler", (_ReceiverHandler,), {"receiver": receiver})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- real workers and beat ----------------------------------------------------------


class PipelineProcesses:
    """Celery workers and beat as subprocesses of this test, on this test's
    database and Redis namespace. Each runs in its own process group, so a kill
    takes the pool children with it, like a machine losing the worker."""

    def __init__(self, env: dict[str, str], namespace: str, workdir: Path) -> None:
        self.env = env
        self.namespace = namespace
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen] = {}
        self.log_files: dict[str, Path] = {}

    # --- processes ---------------------------------------------------------------
    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        self.log_files[name] = log
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def start_worker(self, name: str, concurrency: int = 1) -> subprocess.Popen:
        process = self._start(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tradeeon",
                "worker",
                "-Q",
                "default,evaluate",
                "--concurrency",
                str(concurrency),
                "-n",
                f"{name}-{self.namespace}@%h",
                "-l",
                "info",
                # Neighbours, gossip and heartbeats cost seconds at start-up and
                # nothing here needs them.
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
        )
        wait_until(
            lambda: " ready." in self.log(name) or process.poll() is not None,
            30,
            f"worker {name} to start",
            self.logs,
        )
        if process.poll() is not None:
            pytest.fail(f"worker {name} exited at start-up\n{self.logs()}")
        return process

    def start_beat(self) -> subprocess.Popen:
        process = self._start(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tradeeon",
                "beat",
                "-l",
                "info",
                "-s",
                str(self.workdir / "beat-schedule"),
            ],
        )
        wait_until(
            lambda: "Sending due task tick" in self.log("beat") or process.poll() is not None,
            30,
            "beat to send its first tick",
            self.logs,
        )
        return process

    def kill(self, name: str) -> None:
        """SIGKILL, no warning: nothing in the worker gets to clean up."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        # All at once: each warm shutdown takes a moment, and they add up.
        for process in self.running.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.running.clear()

    def log(self, name: str) -> str:
        path = self.log_files.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in self.log_files:
            tail = "\n".join(self.log(name).splitlines()[-lines:])
            parts.append(f"--- {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts)

    # --- the broker, as the workers see it ----------------------------------------
    def broker(self, **transport_options: Any):
        return celery_app.connection_for_write(
            transport_options={"global_keyprefix": f"{self.namespace}:", **transport_options}
        )

    def send(self, task_name: str, *args: Any, **kwargs: Any) -> None:
        """Publish a task to this test's workers (routed as in production). A
        connection per message: one test restarts Redis under it."""
        with self.broker() as broker:
            celery_app.send_task(task_name, args, kwargs, connection=broker)

    def sweep_until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> None:
        """Send the outbox sweep every 2 s (beat does every 15 s) until `condition()`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send("alerts.tasks.sweep_outbox")
            pause_until = min(time.monotonic() + 2, deadline)
            while time.monotonic() < pause_until:
                if condition():
                    return
                time.sleep(0.1)
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.logs()}")

    def restore_unacked(self) -> None:
        """What Redis does once the visibility timeout has passed: messages taken
        by a worker that never acknowledged them go back to their queues."""
        with self.broker(visibility_timeout=0) as broker:
            broker.default_channel.qos.restore_visible(num=1000)


def database_url() -> str:
    """The test database (pytest-django's test_<name>) as a DATABASE_URL."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"])
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def processes(
    transactional_db, stub: BinanceStub, namespace: str, tmp_path: Path
) -> Iterator[PipelineProcesses]:
    """Starts nothing by itself: tests start the workers and beat they need.
    Short timeouts so that recoveries happen within a test's patience."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tradeeon.settings",
        "DATABASE_URL": database_url(),
        "CACHE_KEY_PREFIX": namespace,
        "CELERY_REDIS_KEY_PREFIX": f"{namespace}:",
        "BINANCE_API_URL": stub.url,
        "BINANCE_TIMEOUT_S": "2",
        "WEBHOOK_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
        "WEBHOOK_TIMEOUT_S": "2",
        "WEBHOOK_RETRY_BASE_S": "0.5",
        "EVALUATION_EXPIRES_S": "3",
        "OUTBOX_SWEEP_AFTER_S": "1",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "INFO",
        # make test runs manage.py check once; each worker start need not.
        "CELERY_SKIP_CHECKS": "1",
    }
    running = PipelineProcesses(env, namespace, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
