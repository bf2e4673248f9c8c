"""Settings read from the environment, with defaults that need no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command

from tests.conftest import REPO

PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "broker": settings.CELERY_BROKER_URL,
    "cache": settings.CACHES["default"]["BACKEND"],
    "poll_ms": settings.ALERT_RUNNER_POLL_MS,
    "max_alerts": settings.ALERT_MAX_ALERTS_PER_SYMBOL,
    "debug": settings.DEBUG,
    "binance": settings.BINANCE_API_URL,
    "acks_late": settings.CELERY_TASK_ACKS_LATE,
    "reject_on_lost": settings.CELERY_TASK_REJECT_ON_WORKER_LOST,
    "prefetch": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
    "serializer": settings.CELERY_TASK_SERIALIZER,
    "beat": sorted(settings.CELERY_BEAT_SCHEDULE),
    "prepare": settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold"),
}))
"""


def run_settings(
    env: dict[str, str], tmp_path: Path, probe: str = PROBE
) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("DATABASE", "REDIS", "CELERY", "SECRET", "DEBUG", "TRADEEON", "ALERT", "BINANCE")
        )
    }
    clean.update(
        {
            "DJANGO_SETTINGS_MODULE": "tradeeon.settings",
            "TRADEEON_VAR_DIR": str(tmp_path / "var"),
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_need_no_server(tmp_path):
    result = run_settings({}, tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["db_name"].startswith(str(tmp_path / "var"))
    assert values["broker"] == "filesystem://"
    assert values["cache"].endswith("FileBasedCache")
    assert (values["poll_ms"], values["max_alerts"], values["debug"]) == (1000, 200, False)
    assert values["binance"].startswith("https://api.binance.com")
    assert (
        values["acks_late"],
        values["reject_on_lost"],
        values["prefetch"],
        values["serializer"],
    ) == (True, True, 1, "json")
    assert {"tick", "sweep-outbox"} <= set(values["beat"])


def test_environment_overrides_the_defaults(tmp_path):
    result = run_settings(
        {
            "DATABASE_URL": "postgres://bob:pw@db.internal:6543/trading",
            "REDIS_URL": "redis://cache.internal:6379/1",
            "CELERY_BROKER_URL": "redis://cache.internal:6379/2",
            "ALERT_RUNNER_POLL_MS": "250",
            "ALERT_MAX_ALERTS_PER_SYMBOL": "5",
            "DEBUG": "true",
            "BINANCE_API_URL": "http://127.0.0.1:9999/api",
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql" and values["db_name"] == "trading"
    assert values["cache"].endswith("RedisCache")
    assert values["broker"] == "redis://cache.internal:6379/2"
    assert (values["poll_ms"], values["max_alerts"], values["debug"]) == (250, 5, True)
    assert values["binance"] == "http://127.0.0.1:9999/api"
    assert values["prepare"] == 5


def test_prepared_statements_can_be_turned_off_for_a_pooler(tmp_path):
    url = "postgres://bob@pgbouncer:6432/trading?prepare_threshold="
    off = run_settings({"DATABASE_URL": url + "none"}, tmp_path)
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["prepare"] is None

    wrong = run_settings({"DATABASE_URL": url + "soon"}, tmp_path)
    assert wrong.returncode != 0
    assert "prepare_threshold must be a number or none, not 'soon'" in wrong.stderr


def test_production_without_secret_key_fails_with_a_clear_message(tmp_path):
    result = run_settings({"TRADEEON_ENV": "production"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_a_malformed_number_names_the_variable(tmp_path):
    result = run_settings({"ALERT_RUNNER_POLL_MS": "fast"}, tmp_path)
    assert result.returncode != 0
    assert "ALERT_RUNNER_POLL_MS must be an integer" in result.stderr


def test_a_retention_under_a_day_names_the_variable(tmp_path):
    result = run_settings({"EVALUATION_CACHE_RETENTION_DAYS": "0"}, tmp_path)
    assert result.returncode != 0
    assert "EVALUATION_CACHE_RETENTION_DAYS must be a number of days, at least 1, got 0" in (
        result.stderr
    )


def test_migrations_are_complete(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
