"""The beat tick: which (symbol, timeframe) pairs are due.

A pair is due when its last closed bar (by the exchange's clock) is newer
than the last bar evaluated and that bar is not already queued. The queued
mark expires with the task, so a task lost to a lagging or dead worker is
queued again on a later tick instead of waiting for the next candle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from conditions.engine.timeframes import bar_open_floor, timeframe_ms
from conditions.models import ConditionSubscription, EvaluationCursor

from .models import Alert

logger = logging.getLogger(__name__)

PAIRS_CACHE_S = 2.0


@dataclass(frozen=True)
class DuePair:
    symbol: str
    timeframe: str
    bar_open_ms: int  # the newest closed bar (or, for forming, the bar in progress)
    forming: bool = False


def _queued_key(symbol: str, timeframe: str, forming: bool) -> str:
    return f"evaluation:queued:{'forming' if forming else 'closed'}:{symbol}:{timeframe}"


def active_pairs() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(pairs with anything to evaluate, pairs with per_bar alerts)."""
    alerts = Alert.objects.filter(status=Alert.Status.ACTIVE)
    pairs = set(alerts.values_list("symbol", "base_timeframe").distinct())
    pairs |= set(
        ConditionSubscription.objects.filter(active=True)
        .values_list("condition__symbol", "condition__timeframe")
        .distinct()
    )
    per_bar = set(
        alerts.filter(fire_mode=Alert.FireMode.PER_BAR)
        .values_list("symbol", "base_timeframe")
        .distinct()
    )
    return pairs, per_bar


def previous_open(open_ms: int, timeframe: str) -> int:
    if timeframe == "1M":
        return int(bar_open_floor(open_ms - 1, "1M"))
    return open_ms - timeframe_ms(timeframe)


def due_pairs(now_ms: int, *, poll_forming: bool = True) -> list[DuePair]:
    pairs, per_bar = active_pairs()
    if not pairs:
        return []
    closed = {}
    for symbol, timeframe in pairs:
        closed[(symbol, timeframe)] = previous_open(
            int(bar_open_floor(now_ms, timeframe)), timeframe
        )
    cursors = {
        (symbol, timeframe): int(last_bar.timestamp() * 1000)
        for symbol, timeframe, last_bar in EvaluationCursor.objects.values_list(
            "symbol", "timeframe", "last_bar"
        )
    }
    queued_marks = cache.get_many([_queued_key(s, tf, False) for s, tf in pairs])
    due = []
    for (symbol, timeframe), bar in sorted(closed.items()):
        evaluated = cursors.get((symbol, timeframe))
        queued = queued_marks.get(_queued_key(symbol, timeframe, False))
        if (evaluated is None or evaluated < bar) and queued != bar:
            due.append(DuePair(symbol, timeframe, bar))
    if poll_forming:
        for symbol, timeframe in sorted(per_bar):
            due.append(
                DuePair(symbol, timeframe, int(bar_open_floor(now_ms, timeframe)), forming=True)
            )
    return due


def mark_queued(due: list[DuePair]) -> None:
    marks = {
        _queued_key(p.symbol, p.timeframe, p.forming): p.bar_open_ms for p in due if not p.forming
    }
    if marks:
        cache.set_many(marks, timeout=evaluation_expiry_s())


def evaluation_expiry_s() -> int:
    """How long a queued evaluation may wait before it is dropped (and re-queued)."""
    return settings.EVALUATION_EXPIRES_S


def forming_expiry_s() -> float:
    return max(settings.ALERT_RUNNER_POLL_MS / 1000 * 2, 1.0)
