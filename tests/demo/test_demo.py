"""`manage.py demo` as a trader runs it on a fresh machine: embedded defaults
(SQLite, the filesystem broker), the real worker and beat, candles replayed
by the local Binance stub. Every run replays the same bars: the market
stays still until the worker has evaluated every pair at the replay's start,
so that no bar is skipped while the worker starts up."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The last 5m bar closed when the replay starts at 2018-01-14 00:00 UTC.
FIRST_BAR = datetime(2018, 1, 13, 23, 55, tzinfo=UTC)

pytestmark = pytest.mark.slow


def embedded_environment(var_dir: Path) -> dict[str, str]:
    settings_from_environment = (
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "CELERY_REDIS_KEY_PREFIX",
        "CACHE_KEY_PREFIX",
        "DJANGO_SETTINGS_MODULE",
    )
    environment = {k: v for k, v in os.environ.items() if k not in settings_from_environment}
    return {**environment, "TRADEEON_VAR_DIR": str(var_dir), "LOG_LEVEL": "WARNING"}


def bars(database: Path, symbol: str) -> list[datetime]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT DISTINCT candle_time FROM condition_evaluation_cache "
            "WHERE symbol = ? AND timeframe = '5m' ORDER BY candle_time",
            [symbol],
        ).fetchall()
    return [datetime.fromisoformat(value).replace(tzinfo=UTC) for (value,) in rows]


def test_the_demo_replays_every_bar_from_its_start(tmp_path) -> None:
    # When the demo replays a few seconds of market
    process = subprocess.run(
        [sys.executable, "manage.py", "demo", "--seconds", "4"],
        cwd=REPO,
        env=embedded_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )

    # Then it succeeds and says what happened
    assert process.returncode == 0, process.stderr[-2000:]
    assert "Waiting for the worker to evaluate every pair" in process.stdout
    assert "In-app notifications:" in process.stdout
    # and each 5m pair was evaluated from the bar closed at the start, every
    # bar after it, none skipped while the worker was starting
    for symbol in ("ETHBTC", "LTCBTC", "ADABTC", "XLMBTC"):
        evaluated = bars(tmp_path / "tradeeon.sqlite3", symbol)
        assert evaluated[0] == FIRST_BAR, (symbol, evaluated[:3])
        assert len(evaluated) > 12, (symbol, len(evaluated))
        expected = [FIRST_BAR + timedelta(minutes=5 * i) for i in range(len(evaluated))]
        assert evaluated == expected, symbol
