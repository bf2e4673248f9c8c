"""`make demo`: the main job on embedded defaults.

Real candles replayed by the local Binance stub, the real beat and a real
Celery worker (kombu's filesystem transport, SQLite, a file cache: no server,
no network), the sample users' alerts and bot, and a local webhook receiver
that checks signatures. It shows progress while it runs and a summary at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import Count

from alerts.models import (
    Alert,
    AlertTrigger,
    Notification,
    OutboxMessage,
    WebhookDelivery,
    WebhookSecret,
)
from alerts.sample_data import DEMO_PASSWORD, OPERATOR, load_sample_data
from alerts.scheduling import active_pairs, pairs_behind
from alerts.services import save_alert
from alerts.webhooks import SIGNATURE_HEADER, sign
from bots.models import Bot, Deal, PaperOrder
from bots.services import subscribe_entry
from conditions.marketdata.replay import as_epoch_ms
from conditions.models import (
    BarEvaluation,
    ConditionSubscription,
    ConditionTrigger,
    EvaluationCursor,
)
from tradeeon.cli import InputError, StrictCommand

REPO = Path(settings.BASE_DIR)
CANDLES = REPO / "tests" / "data" / "klines"
DEMO_SYMBOLS = ("ETHBTC", "LTCBTC", "ADABTC", "XLMBTC", "ETCBTC")
# Enough history before the replay starts for 1000-candle warm-ups.
REPLAY_START = "2018-01-14T00:00:00Z"
# A cold worker imports pandas and loads its compiled kernels before its first
# evaluation: seconds, or a minute with an empty numba cache.
START_TIMEOUT_S = 180


def set_stub_speed(port: int, speed: float) -> None:
    """Start (or change) the stub's clock through its control endpoint."""
    requests.post(
        f"http://127.0.0.1:{port}/_stub/clock", json={"speed": speed}, timeout=10
    ).raise_for_status()


WEBHOOK_PORT = 8765


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebhookReceiver(ThreadingHTTPServer):
    """Stands in for a user's server: counts deliveries whose signature is valid."""

    def __init__(self, port: int, secrets: dict[str, str]):
        self.valid = Counter()
        self.invalid = 0
        self.secrets = secrets
        super().__init__(("127.0.0.1", port), _ReceiverHandler)


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        signature = self.headers.get(SIGNATURE_HEADER, "")
        if any(sign(secret, body) == signature for secret in self.server.secrets.values()):
            self.server.valid[json.loads(body)["alert"]["symbol"]] += 1
            self.send_response(204)
        else:
            self.server.invalid += 1
            self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


class Command(StrictCommand):
    help = "Replay real candles through beat, a worker and the real tasks; then show what happened."

    def add_arguments(self, parser):
        parser.add_argument(
            "--seconds", type=float, default=75, help="how long to replay (default 75)"
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=1440,
            help="stub clock speed (default 1440: a day per minute)",
        )
        parser.add_argument(
            "--setup-only", action="store_true", help="load the sample data and stop"
        )

    def handle(self, *args, **options):
        if options["seconds"] <= 0 or options["speed"] <= 0:
            raise InputError("--seconds and --speed must be positive")
        if (
            settings.CELERY_BROKER_URL != "filesystem://"
            or "sqlite" not in settings.DATABASES["default"]["ENGINE"]
        ):
            self.stdout.write(
                self.style.WARNING(
                    "Note: the demo is meant for the embedded defaults (unset DATABASE_URL / CELERY_BROKER_URL)."
                )
            )
        db = settings.DATABASES["default"]
        self.stdout.write(
            f"Database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}; broker: {settings.CELERY_BROKER_URL}"
        )
        call_command("migrate", interactive=False, verbosity=0)
        loaded = self.set_up()
        self.show_loaded(loaded)
        if options["setup_only"]:
            return
        self.replay(options["seconds"], options["speed"])

    # --- set-up -----------------------------------------------------------------
    def set_up(self):
        loaded = load_sample_data()
        demo_alerts = Alert.objects.filter(user__username__in=loaded.users)
        # Each run tells the same story: clear what the previous run produced.
        AlertTrigger.objects.filter(alert__in=demo_alerts).delete()
        OutboxMessage.objects.all().delete()
        ConditionTrigger.objects.all().delete()
        BarEvaluation.objects.all().delete()
        EvaluationCursor.objects.all().delete()
        cache.clear()
        broker = Path(
            settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(
                "data_folder_in", settings.VAR_DIR / "broker" / "queue"
            )
        )
        if broker.is_dir():
            shutil.rmtree(broker)
            broker.mkdir(parents=True)
        for alert in loaded.alerts:
            save_alert(alert)
        for bot in loaded.bots:
            ConditionSubscription.objects.filter(bot=bot).delete()
            bot.deals.all().delete()
            PaperOrder.objects.filter(account=bot.account).delete()
            subscribe_entry(bot)
        return loaded

    def show_loaded(self, loaded):
        self.stdout.write(
            self.style.SUCCESS(
                f"Sample users: {', '.join(loaded.users)}; {len(loaded.alerts)} alerts, {len(loaded.bots)} bot"
            )
        )
        for alert in loaded.alerts:
            self.stdout.write(
                f"  alert #{alert.pk:<3} {alert.user.username:<6} {alert.symbol:<7} {alert.fire_mode:<13} {alert.action.get('type', 'notify'):<8} {alert.name}"
            )
        for bot in loaded.bots:
            self.stdout.write(
                f"  bot   #{bot.pk:<3} {bot.user.username:<6} {bot.symbol:<7} {bot.kind:<13} {bot.name}"
            )

    # --- the run ------------------------------------------------------------------
    def replay(self, seconds: float, speed: float):
        stub_port = free_port()
        env = {
            **os.environ,
            "BINANCE_API_URL": f"http://127.0.0.1:{stub_port}/api",
            "WEBHOOK_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
            "WEBHOOK_RETRY_BASE_S": "1",
            # A replayed day per minute: resting paper orders are checked often.
            "RECONCILE_INTERVAL_S": "2",
            "PYTHONUNBUFFERED": "1",
        }
        secrets = {str(s.user_id): s.secret for s in WebhookSecret.objects.all()}
        for alert in Alert.objects.filter(action__type="webhook"):
            secret, _ = WebhookSecret.objects.get_or_create(user=alert.user)
            secrets[str(alert.user_id)] = secret.secret
        receiver = WebhookReceiver(WEBHOOK_PORT, secrets)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()

        log_dir = Path(settings.VAR_DIR) / "demo-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        manage = [sys.executable, str(REPO / "manage.py")]
        celery = [sys.executable, "-m", "celery", "-A", "tradeeon"]
        commands = {
            "stub": [
                *manage,
                "binance_stub",
                "--port",
                str(stub_port),
                "--candles",
                str(CANDLES),
                "--start",
                REPLAY_START,
                # Frozen until every pair has been evaluated at the start
                # (below): a worker still starting up while the market runs
                # at 1440x would skip the first bars, more or fewer from one
                # run to the next.
                "--speed",
                "0",
            ],
            "worker": [
                *celery,
                "worker",
                "-Q",
                "default,evaluate",
                "--concurrency",
                "2",
                "-l",
                "warning",
                "-n",
                "demo@%h",
            ],
            "beat": [
                *celery,
                "beat",
                "-l",
                "warning",
                "-s",
                str(Path(settings.VAR_DIR) / "demo-beat-schedule"),
            ],
        }
        processes = {}
        try:
            for name, command in commands.items():
                log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
                processes[name] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                if name == "stub":
                    self.wait_for_port(stub_port, processes[name])
            self.stdout.write(
                f"\nWaiting for the worker to evaluate every pair at {REPLAY_START}..."
            )
            self.wait_for_first_evaluations(processes, log_dir, timeout=START_TIMEOUT_S)
            set_stub_speed(stub_port, speed)
            self.stdout.write(
                f"Replaying from {REPLAY_START} at {speed:g}x for {seconds:g} s (logs in {log_dir})"
            )
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                time.sleep(3)
                self.check_running(processes, log_dir)
                self.progress(started, speed, receiver)
            self.stdout.write("Stopping beat, letting the worker finish what is queued...")
            self.stop(processes.pop("beat"))
            self.drain(timeout=20)
        finally:
            for process in reversed(processes.values()):
                self.stop(process)
            receiver.shutdown()
        self.summary(receiver)

    @staticmethod
    def check_running(processes: dict[str, subprocess.Popen], log_dir: Path) -> None:
        for name, process in processes.items():
            if process.poll() is not None:
                raise InputError(
                    f"the {name} process stopped (exit {process.returncode}); see {log_dir / (name + '.log')}"
                )

    def wait_for_first_evaluations(
        self, processes: dict[str, subprocess.Popen], log_dir: Path, timeout: float
    ) -> None:
        """Until every pair the beat schedules has its evaluation cursor at the
        last bar closed when the replay starts."""
        start_ms = as_epoch_ms(REPLAY_START)
        pairs, _ = active_pairs()
        deadline = time.monotonic() + timeout
        while waiting := pairs_behind(start_ms, pairs):
            self.check_running(processes, log_dir)
            if time.monotonic() > deadline:
                names = ", ".join(f"{symbol} {timeframe}" for symbol, timeframe, _ in waiting)
                raise InputError(
                    f"the worker had not evaluated {names} after {timeout:g} s; "
                    f"see {log_dir / 'worker.log'}"
                )
            time.sleep(0.2)

    def wait_for_port(self, port: int, process: subprocess.Popen):
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if process.poll() is not None:
                raise InputError("the Binance stub did not start; see var/demo-logs/stub.log")
            time.sleep(0.1)
        raise InputError("the Binance stub did not start within 10 s")

    @staticmethod
    def stop(process: subprocess.Popen):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def drain(self, timeout: float):
        deadline = time.monotonic() + timeout
        while (
            time.monotonic() < deadline
            and OutboxMessage.objects.filter(done_at__isnull=True).exists()
        ):
            time.sleep(0.5)

    def progress(self, started: float, speed: float, receiver: WebhookReceiver):
        replay_ms = as_epoch_ms(REPLAY_START) + (time.monotonic() - started) * speed * 1000
        last = (
            BarEvaluation.objects.order_by("-candle_time")
            .values_list("candle_time", flat=True)
            .first()
        )
        self.stdout.write(
            f"  [{time.monotonic() - started:5.0f}s] market time ~{datetime.fromtimestamp(replay_ms / 1000, UTC):%Y-%m-%d %H:%M}"
            f"  last bar evaluated {last:%m-%d %H:%M}"
            if last
            else "  waiting for the first closed bar...",
        )
        self.stdout.write(
            f"           alert triggers {AlertTrigger.objects.count():4}  notifications {Notification.objects.count():4}"
            f"  webhooks {sum(receiver.valid.values()):3}  condition triggers {ConditionTrigger.objects.count():4}"
            f"  deals {Deal.objects.count():3}"
        )

    def summary(self, receiver: WebhookReceiver):
        self.stdout.write(self.style.SUCCESS("\nWhat happened"))
        per_symbol = (
            AlertTrigger.objects.values("alert__symbol")
            .annotate(n=Count("id"))
            .order_by("alert__symbol")
        )
        self.stdout.write("  Alerts fired per symbol:")
        for row in per_symbol:
            self.stdout.write(f"    {row['alert__symbol']:<8} {row['n']}")
        for alert in Alert.objects.order_by("pk"):
            self.stdout.write(
                f"    alert #{alert.pk} {alert.name[:50]:<50} fired {alert.triggers.count():3}x  status {alert.status}"
            )
        self.stdout.write(f"  In-app notifications: {Notification.objects.count()}")
        delivered = WebhookDelivery.objects.filter(outcome="delivered").count()
        self.stdout.write(
            f"  Webhooks delivered: {delivered} (receiver verified {sum(receiver.valid.values())} signatures, rejected {receiver.invalid})"
        )
        condition_triggers = ConditionTrigger.objects.count()
        bot_actions = ConditionSubscription.objects.filter(last_triggered_at__isnull=False).count()
        self.stdout.write(
            f"  Condition triggers (shared registry): {condition_triggers}; bot subscriptions that received a trigger: {bot_actions}"
        )
        self.stdout.write("  DCA bots (paper exchange):")
        for bot in Bot.objects.filter(user__username__in=("alice", "bob", "carol")).order_by("pk"):
            self.stdout.write(f"    {bot.name}")
            for deal in bot.deals.order_by("pk"):
                filled = deal.orders.filter(status="filled")
                pnl = (
                    f"P&L {deal.realized_pnl_quote:+.8f} BTC ({deal.realized_pnl_pct:+.2f}%)"
                    if deal.realized_pnl_quote is not None
                    else "still open"
                )
                self.stdout.write(
                    f"      deal #{deal.pk} {deal.state:<8} {deal.close_reason or '':<12} safety orders filled {deal.safety_orders_filled}"
                    f"  orders filled {filled.count()}  {pnl}"
                )
            if not bot.deals.exists():
                self.stdout.write("      no deal: its entry did not fire in this window")
        pending = OutboxMessage.objects.filter(done_at__isnull=True).count()
        self.stdout.write(f"  Outbox messages still pending: {pending}")
        self.stdout.write(
            f"\nLook at it in the admin: `make web`, then http://127.0.0.1:8000/admin/ as {OPERATOR} / {DEMO_PASSWORD}"
        )
