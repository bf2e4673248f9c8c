"""The scale benchmark's cycles: forked shard workers warmed on the cycle
before the measured ones, each measured cycle timed across every shard, the
best one reported with every cycle's time beside it."""

from __future__ import annotations

import time

import pytest

from conditions.bench.engine_cycle import CycleOutcome
from conditions.bench.scale import balanced_shards, run_sharded


class SlowWhenAsked:
    """A shard's stand-in workload: it notes the cycle it evaluates, and is
    slow on every cycle but -1."""

    def __init__(self, shard: list[int]) -> None:
        self.shard = shard
        self.warmed: int | None = None

    def run(self, cycle: int) -> CycleOutcome:
        if self.warmed is None:
            self.warmed = cycle
            return CycleOutcome()
        time.sleep(0.02 if cycle == -1 else 0.25)
        # Which shard evaluated which cycle, after which warm-up.
        return CycleOutcome(fired={(cycle, self.warmed, index) for index in self.shard})


def test_each_measured_cycle_is_timed_and_the_fastest_is_the_figure() -> None:
    # When three cycles are measured over two shards
    result = run_sharded(SlowWhenAsked, [5, 3, 2, 1], processes=2, cycles=3)

    # Then every cycle is timed, in order, and the best is the one reported
    assert len(result.cycle_walls) == 3
    assert result.wall_s == min(result.cycle_walls) == result.cycle_walls[1]
    assert result.cycle_walls[0] >= 0.25 and result.cycle_walls[2] >= 0.25
    # with that cycle's outcome: cycle -1, on every pair, after warming on -3
    assert result.outcome.fired == {(-1, -3, index) for index in range(4)}
    assert len(result.shard_seconds) == 2


def test_one_cycle_is_cycle_zero_after_the_warm_up_on_the_one_before() -> None:
    result = run_sharded(SlowWhenAsked, [1, 1], processes=2, cycles=1)

    assert result.cycle_walls == [result.wall_s]
    assert result.outcome.fired == {(0, -1, 0), (0, -1, 1)}


def test_no_measured_cycle_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one cycle"):
        run_sharded(SlowWhenAsked, [1], processes=1, cycles=0)


def test_shards_are_balanced_by_weight() -> None:
    shards = balanced_shards([9, 1, 5, 4, 3, 2], 2)

    assert sorted(index for shard in shards for index in shard) == list(range(6))
    assert sorted(sum([9, 1, 5, 4, 3, 2][index] for index in shard) for shard in shards) == [
        12,
        12,
    ]
