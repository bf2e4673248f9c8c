"""manage.py bench_orders: a tiny real run prints its figures and finds exactly
one exchange order per bot; what it cannot measure honestly it refuses."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import manage

pytestmark = pytest.mark.worker


def bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    return manage("bench_orders", *args, **env)


def test_it_refuses_sqlite_in_one_line_with_exit_2(tmp_path):
    result = bench(DATABASE_URL=f"sqlite:///{tmp_path / 'bench.sqlite3'}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "manage.py bench_orders: error: bench_orders needs PostgreSQL (DATABASE_URL=postgres://...)"
    ]


def test_a_small_run_places_one_order_per_bot_and_prints_its_latency(transactional_db):
    result = bench("--bots", "6", "--conditions", "2", "--workers", "1", "--concurrency", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"bench_orders: bots=6 conditions=2 p50_ms=\d+ p99_ms=\d+ stub_base_orders=6", last
    ), last
