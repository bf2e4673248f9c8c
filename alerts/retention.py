"""Retention: rows the pipeline writes for its own use, deleted once nothing
can read them any more.

- The evaluation cache: a row per pair and bar. It is read by the status API
  and the admin, which show whatever history is kept, and by bots' entry
  playbooks (`bots.services.entry_holds`), which need every step's flags
  over their validity window. A symbol's rows are kept for the retention
  plus the longest window a bot's entry reads on it, so a decision taken up
  to the retention late still finds its bars. A symbol with a bot whose entry
  cannot be read keeps all its rows.
- Done outbox messages. Pending ones are never deleted. Done ones are kept
  for at least the webhook sweep's window, which looks for attempts lost with
  a worker through them.

Both delete in small batches, each its own short transaction, so the pipeline
writing meanwhile never waits long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from conditions.engine.playbook import NormalizedAlert
from conditions.engine.timeframes import DAY_MS, TIMEFRAME_MS
from conditions.models import BarEvaluation

from .dispatch import WEBHOOK_SWEEP_WINDOW
from .models import OutboxMessage

logger = logging.getLogger(__name__)

# Bars deleted per statement in a pair, messages per statement in the outbox.
BATCH_BARS = 2_000
BATCH_MESSAGES = 5_000


@dataclass
class Pruned:
    evaluations: int = 0
    outbox_messages: int = 0
    # Symbols whose rows are kept longer than the retention for bots'
    # entries: symbol -> the oldest bar kept (None: every bar).
    kept_for_bots: dict[str, datetime | None] = field(default_factory=dict)
    cache_before: datetime | None = None
    outbox_before: datetime | None = None


def bar_ms(timeframe: str) -> int:
    """A bar's length, a month's at its longest."""
    return TIMEFRAME_MS.get(timeframe, 31 * DAY_MS)


def entry_window_ms(playbook: NormalizedAlert) -> int:
    """How far back before its decision an entry playbook reads the cache:
    its longest validity in base bars, and two bars of its longest step
    timeframe (the step's bar closed by the first base bar's close opened up
    to two of them before it). Nothing for an entry of one condition, which
    reads no row."""
    if len(playbook.steps) < 2:
        return 0
    validity = max(step.validity_bars for step in playbook.steps)
    step_bar = max(bar_ms(step.canonical["timeframe"]) for step in playbook.steps)
    return validity * bar_ms(playbook.base_timeframe) + 2 * step_bar


def bot_windows() -> dict[str, int | None]:
    """For each symbol with a bot entering on several conditions, the
    longest window its bots' entries read (ms); None where a bot's entry
    cannot be read, whose symbol's rows are then all kept."""
    from bots.models import Bot
    from bots.services import entry_playbook

    windows: dict[str, int | None] = {}
    for bot in Bot.objects.only("pk", "symbol", "base_timeframe", "settings").iterator():
        try:
            playbook = entry_playbook(bot)
        except Exception as exc:  # whatever it is, its rows are not ours to delete
            logger.warning("bot %s: entry not readable (%s); keeping %s", bot.pk, exc, bot.symbol)
            windows[bot.symbol] = None
            continue
        window = 0 if playbook is None else entry_window_ms(playbook)
        longest = windows.get(bot.symbol, 0)
        if window and longest is not None:
            windows[bot.symbol] = max(window, longest)
    return windows


def prune(
    now_ms: int,
    *,
    cache_days: int | None = None,
    outbox_days: int | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Delete (or with `dry_run` count) the cache rows and done outbox
    messages past their retention. `now_ms` is the market's time, the clock
    of the cache's bars; the outbox's is the wall clock."""
    cache_days = settings.EVALUATION_CACHE_RETENTION_DAYS if cache_days is None else cache_days
    outbox_days = settings.OUTBOX_RETENTION_DAYS if outbox_days is None else outbox_days
    if cache_days < 1 or outbox_days < 1:
        raise ValueError("retention is at least 1 day")
    keep_ms = cache_days * DAY_MS
    pruned = Pruned(cache_before=_from_ms(now_ms - keep_ms))
    windows = bot_windows()
    pairs = BarEvaluation.objects.order_by().values_list("symbol", "timeframe").distinct()
    for symbol, timeframe in list(pairs):
        window = windows.get(symbol, 0)
        if window is None:
            pruned.kept_for_bots[symbol] = None
            continue
        before = _from_ms(now_ms - keep_ms - window)
        if window:
            pruned.kept_for_bots[symbol] = before
        pruned.evaluations += _prune_pair(symbol, timeframe, before, dry_run)

    pruned.outbox_before = timezone.now() - max(timedelta(days=outbox_days), WEBHOOK_SWEEP_WINDOW)
    pruned.outbox_messages = _prune_outbox(pruned.outbox_before, dry_run)
    return pruned


def _prune_pair(symbol: str, timeframe: str, before: datetime, dry_run: bool) -> int:
    """The pair's rows of bars opened before `before`, oldest first, a batch
    of bars at a time (by the primary key's prefix)."""
    rows = BarEvaluation.objects.filter(symbol=symbol, timeframe=timeframe, candle_time__lt=before)
    if dry_run:
        return rows.count()
    span = timedelta(milliseconds=BATCH_BARS * bar_ms(timeframe))
    deleted = 0
    while oldest := rows.order_by("candle_time").values_list("candle_time", flat=True).first():
        count, _ = rows.filter(candle_time__lt=min(before, oldest + span)).delete()
        deleted += count
    return deleted


def _prune_outbox(before: datetime, dry_run: bool) -> int:
    done = OutboxMessage.objects.filter(done_at__lt=before)
    if dry_run:
        return done.count()
    deleted = 0
    while ids := list(done.order_by().values_list("pk", flat=True)[:BATCH_MESSAGES]):
        count, _ = OutboxMessage.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
