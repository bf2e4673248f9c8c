"""The evaluation cache's readers on SQLite, the embedded default: a
condition's rows are found by its id inside each pair's row (json_type there,
jsonb's `?` on PostgreSQL, where the rest of the suite runs), and pruned
by age."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.demo.test_demo import REPO, embedded_environment

pytestmark = pytest.mark.slow

READ = """
import json
from datetime import UTC, datetime
from alerts import retention
from bots.services import fired_at
import numpy as np
from conditions.models import BarEvaluation, Condition
from conditions.services import condition_status

ours, other = "ab" * 32, "cd" * 32
Condition.objects.create(condition_id=ours, condition_type="price", symbol="ETHBTC",
                         timeframe="5m", indicator_config={})
rows = [("ETHBTC", "5m", 10, {ours: {"left": 1.5, "fired": True}, other: {"fired": False}}),
        ("ETHBTC", "5m", 11, {other: {"fired": True}}),
        ("ETHBTC", "15m", 12, {ours: {"left": 2.5, "fired": False}}),
        ("LTCBTC", "5m", 13, {ours: {"left": 9.0, "fired": True}})]
for symbol, timeframe, hour, values in rows:
    BarEvaluation.objects.create(symbol=symbol, timeframe=timeframe,
                                 candle_time=datetime(2018, 1, 17, hour, tzinfo=UTC),
                                 indicator_values=values)
status = condition_status(ours)
opens = np.array([1516183200000, 1516186800000, 1516190400000])  # 10:00, 11:00, 12:00
fired = fired_at("ETHBTC", "5m", [ours, other], opens)
print(json.dumps({
    "count": status["evaluation_count"],
    "latest": [status["latest_evaluation"]["timeframe"],
               status["latest_evaluation"]["indicator_values"]],
    "annotated": Condition.objects.with_evaluations().get().evaluation_count,
    "fired": {key: column.tolist() for key, column in fired.items()},
    "pruned": retention.prune(1516190400000 + 86_400_000 - 1_800_000, cache_days=1).evaluations,
    "left": sorted(BarEvaluation.objects.values_list("timeframe", "candle_time__hour")),
}))
"""


def test_a_conditions_rows_are_found_by_its_id_on_sqlite(tmp_path) -> None:
    environment = embedded_environment(tmp_path)
    for command in (["migrate", "-v0"], ["shell", "-c", READ]):
        process = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert process.returncode == 0, process.stderr[-2000:]

    seen = json.loads(process.stdout.strip().splitlines()[-1])
    # Its symbol's rows that hold it: not the row without it, not LTCBTC's.
    assert seen["count"] == seen["annotated"] == 2
    assert seen["latest"] == ["15m", {"left": 2.5, "fired": False}]
    # (12:00 has no row: not fired)
    assert seen["fired"] == {"ab" * 32: [True, False, False], "cd" * 32: [False, True, False]}
    # A day of cache kept, on 2018-01-18 at 11:30: the bars before 2018-01-17
    # 11:30 go (ETHBTC's 5m at 10:00 and 11:00), the others stay.
    assert seen["pruned"] == 2
    assert seen["left"] == [["15m", 12], ["5m", 13]]
