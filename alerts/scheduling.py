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

from bots.models import Deal
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
    # order_by(): the models' default ordering (created_at) would join the
    # DISTINCT and return a row per alert instead of one per pair.
    alerts = set(
        Alert.objects.filter(status=Alert.Status.ACTIVE)
        .order_by()
        .values_list("symbol", "base_timeframe", "fire_mode")
        .distinct()
    )
    pairs = {(symbol, timeframe) for symbol, timeframe, _ in alerts}
    pairs |= set(
        ConditionSubscription.objects.filter(active=True)
        .order_by()
        .values_list("condition__symbol", "condition__timeframe")
        .distinct()
    )
    # Open deals follow their pair's closed bars (a trailing take profit needs
    # every one), even when nothing else on the pair is subscribed any more.
    pairs |= set(
        Deal.objects.filter(state=Deal.State.OPEN)
        .order_by()
        .values_list("bot__symbol", "bot__base_timeframe")
        .distinct()
    )
    per_bar = {
        (symbol, timeframe)
        for symbol, timeframe, fire_mode in alerts
        if fire_mode == Alert.FireMode.PER_BAR
    }
    return pairs, per_bar


def previous_open(open_ms: int, timeframe: str) -> int:
    if timeframe == "1M":
        return int(bar_open_floor(open_ms - 1, "1M"))
    return open_ms - timeframe_ms(timeframe)


def pairs_behind(now_ms: int, pairs: set[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """(symbol, timeframe, newest closed bar's open ms) of the pairs whose
    evaluation cursor is before the bar newly closed at `now_ms`, sorted."""
    if not pairs:
        return []
    # The newest closed bar depends only on the timeframe: once per timeframe, not per pair.
    closed = {
        timeframe: previous_open(int(bar_open_floor(now_ms, timeframe)), timeframe)
        for timeframe in {timeframe for _, timeframe in pairs}
    }
    cursors = {
        (symbol, timeframe): int(last_bar.timestamp() * 1000)
        for symbol, timeframe, last_bar in EvaluationCursor.objects.values_list(
            "symbol", "timeframe", "last_bar"
        )
    }
    return [
        (symbol, timeframe, closed[timeframe])
        for symbol, timeframe in sorted(pairs)
        if cursors.get((symbol, timeframe), -1) < closed[timeframe]
    ]


def due_pairs(now_ms: int, *, poll_forming: bool = True) -> list[DuePair]:
    pairs, per_bar = active_pairs()
    if not pairs:
        return []
    behind = pairs_behind(now_ms, pairs)
    # Only pairs behind their bar can be queued already; most ticks have none.
    queued_marks = (
        cache.get_many([_queued_key(s, tf, False) for s, tf, _ in behind]) if behind else {}
    )
    due = [
        DuePair(symbol, timeframe, bar)
        for symbol, timeframe, bar in behind
        if queued_marks.get(_queued_key(symbol, timeframe, False)) != bar
    ]
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
