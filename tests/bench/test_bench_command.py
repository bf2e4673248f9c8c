"""manage.py bench at a tiny scale: it runs, against PostgreSQL for its
database part, cleans up after itself, and ends with the line machines read.
Shapes only: the figures are the benchmark's business, not the tests'."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import postgres_session

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--users", "40", "--symbols", "2", "--alerts", "150", "--scale-symbols", "3",
    "--repeats", "1", "--scale-cycles", "2", "--processes", "2",
]  # fmt: skip
LAST_LINE = re.compile(
    r"bench: shared_vs_per_alert=\d+\.\dx cycle_100k_engine_s=\d+\.\d{3} "
    r"cycle_100k_with_db_s=(\d+\.\d{3}|skipped) e2e_10k_s=skipped"
)

pytestmark = pytest.mark.slow


def bench(*arguments: str, **environment: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "bench", *arguments],
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "WARNING", **environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def postgres_databases() -> set[str]:
    with postgres_session("postgres") as connection:
        return {name for (name,) in connection.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def postgresql() -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the database part of bench runs on PostgreSQL")


def test_quick_runs_every_part_but_end_to_end_and_ends_with_the_machine_line(postgresql) -> None:
    # When the quick benchmark runs at a tiny scale
    process = bench("--quick", *TINY)
    out, err = process.communicate(timeout=900)

    # Then it succeeds, reports each part, and its last line is the machine line
    assert process.returncode == 0, err
    lines = out.strip().splitlines()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert "skipped" not in lines[-1].split("cycle_100k_with_db_s=")[1].split()[0]
    for heading in ("Seeds' scenario", "Scale, engine only", "Scale, with database writes"):
        assert any(line.startswith(heading) for line in lines), heading
    assert not any(line.startswith("End to end") for line in lines)
    # with each scale part's two measured cycles, the best of them first
    for part in ("engine only", "with database writes"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"Scale, {part}"))
        timed = re.fullmatch(
            r"\s+cycle, wall \(best of 2\)\s+(\d+\.\d{3}) s  \(cycles in order: "
            r"(\d+\.\d{3}), (\d+\.\d{3}) s; median \d+\.\d{3} s\)",
            lines[start + 1],
        )
        assert timed, lines[start + 1]
        assert float(timed[1]) == min(float(timed[2]), float(timed[3]))
    # and its scratch database is gone
    assert f"tradeeon_bench_{process.pid}" not in postgres_databases()


def test_it_refuses_sqlite_for_the_database_part_in_one_line(tmp_path) -> None:
    process = bench("--quick", *TINY, DATABASE_URL=f"sqlite:///{tmp_path / 'bench.sqlite3'}")
    out, err = process.communicate(timeout=300)

    assert process.returncode == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "needs PostgreSQL" in err


def test_without_the_database_part_it_runs_on_sqlite_and_says_what_it_skipped(tmp_path) -> None:
    process = bench(
        "--quick", "--no-database", *TINY, DATABASE_URL=f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    )
    out, err = process.communicate(timeout=600)

    assert process.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert LAST_LINE.fullmatch(last), last
    assert "cycle_100k_with_db_s=skipped" in last


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--users", "0"), "--users must be at least 1"),
        (("--scale-cycles", "0"), "--scale-cycles must be 1..10"),
    ],
)
def test_bad_sizes_are_one_line_errors(arguments, message) -> None:
    process = bench("--quick", *arguments)
    _, err = process.communicate(timeout=300)

    assert process.returncode == 2
    assert err.strip() == f"manage.py bench: error: {message}"
