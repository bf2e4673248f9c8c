"""manage.py bench_pipeline: refuses what it cannot measure honestly, and a
tiny run prints its figures, leaving no scratch database behind."""

from __future__ import annotations

import re
import subprocess

import pytest
from django.core.management import call_command

from tests.conftest import manage, postgres_session
from tradeeon.cli import InputError


def bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    return manage("bench_pipeline", *args, **env)


def test_it_refuses_sqlite_in_one_line_with_exit_2(tmp_path):
    result = bench(DATABASE_URL=f"sqlite:///{tmp_path / 'bench.sqlite3'}")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "manage.py bench_pipeline: error: bench_pipeline needs PostgreSQL "
        "(DATABASE_URL=postgres://...), not sqlite3"
    ]


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"symbols": 0}, "--symbols must be between 1 and 200, got 0"),
        ({"alerts": 5, "symbols": 10}, "--alerts must be at least --symbols (10), got 5"),
        ({"bars": 0}, "--workers 1..16, --bars 1..500 and --speed in (0, 600] please"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(options, complaint):
    with pytest.raises(InputError, match=re.escape(complaint)) as refused:
        call_command("bench_pipeline", **options)
    assert refused.value.returncode == 2


def scratch_databases() -> list[str]:
    with postgres_session("postgres") as server:
        rows = server.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tradeeon_bench_%'"
        ).fetchall()
    return [name for (name,) in rows]


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.timeout(240)
def test_a_small_run_ends_with_its_figures_on_one_machine_readable_line():
    before = scratch_databases()

    result = bench(
        *("--alerts", "12", "--symbols", "2", "--workers", "1", "--bars", "1", "--speed", "120")
    )

    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"bench_pipeline: alerts=12 symbols=2 p50_ms=(\d+) p99_ms=(\d+) tick_200_idle_ms=([\d.]+)",
        last,
    )
    assert match, last
    p50, p99, tick = int(match[1]), int(match[2]), float(match[3])
    assert 0 < p50 <= p99 < 60_000
    assert 0 < tick < 1000
    assert scratch_databases() == before
