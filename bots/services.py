"""Bot operations: starting and pausing bots, and what a registry trigger means for a bot."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
from django.db import transaction
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from conditions.engine.playbook import NormalizedAlert, alert_signal, normalize_alert
from conditions.engine.timeframes import bar_open_floor, next_bar_open, timeframe_ms
from conditions.models import (
    BarEvaluation,
    ConditionSubscription,
    ConditionTrigger,
    EvaluationCursor,
)
from conditions.services import register_canonical, subscribe, unsubscribe_bot

from . import deals
from .models import Bot, Deal

logger = logging.getLogger(__name__)


def entry_playbook(bot: Bot) -> NormalizedAlert | None:
    """The bot's entry conditions as a normalized playbook, or None for asap."""
    entry = bot.settings.get("entry") or {"mode": "asap"}
    if entry.get("mode") == "asap":
        return None
    return normalize_alert(
        {"conditionConfig": entry}, symbol=bot.symbol, base_timeframe=bot.base_timeframe
    )


def subscribe_entry(bot: Bot) -> list[str]:
    """Register the bot's entry conditions and subscribe the bot to them, so
    identical entries across bots share one evaluation."""
    playbook = entry_playbook(bot)
    if playbook is None:
        return []
    ids = []
    for step in playbook.steps:
        condition, _ = register_canonical(step.canonical)
        subscribe(
            user=bot.user,
            bot=bot,
            condition=condition,
            bot_type=bot.kind,
            bot_config={"role": "entry"},
        )
        ids.append(condition.condition_id)
    return ids


@transaction.atomic
def start_bot(bot: Bot) -> Bot:
    bot.status = Bot.Status.RUNNING
    bot.save(update_fields=["status", "updated_at"])
    subscribe_entry(bot)
    if entry_playbook(bot) is None:
        # Entering needs the exchange's clock and price: a task, not the web request.
        from .tasks import enter_asap as enter_asap_task

        transaction.on_commit(lambda: enter_asap_task.delay(bot.pk))
    return bot


def enter_asap(bot_id: int, now_ms: int) -> Deal | None:
    """An asap bot enters as soon as it may (max_active_deals, cooldown); the
    key is the minute, so two runs of the beat in one minute open one deal."""
    return deals.open_deal(bot_id, f"asap-{now_ms // 60_000}", now_ms, "asap")


def enter_asap_bots(now_ms: int) -> int:
    """Re-enter asap bots whose deals closed and whose cooldown has passed."""
    opened = 0
    idle = Bot.objects.filter(
        status=Bot.Status.RUNNING, kind=Bot.Kind.DCA, settings__entry__mode="asap"
    ).exclude(
        deals__state__in=[
            Deal.State.WAITING_ENTRY,
            Deal.State.OPENING,
            Deal.State.OPEN,
            Deal.State.CLOSING,
        ]
    )
    for bot in idle:
        if enter_asap(bot.pk, now_ms) is not None:
            opened += 1
    return opened


@transaction.atomic
def pause_bot(bot: Bot) -> Bot:
    """No new deals; open deals keep their take profit and stop loss."""
    bot.status = Bot.Status.PAUSED
    bot.save(update_fields=["status", "updated_at"])
    ConditionSubscription.objects.filter(bot=bot, active=True, bot_config__role="entry").update(
        active=False
    )
    return bot


def delete_bot(bot: Bot) -> None:
    unsubscribe_bot(bot)
    bot.delete()


class EntryNotReady(Exception):
    """A pair whose bar an entry playbook needs has not evaluated it yet (the
    pairs of a symbol that close together are evaluated by separate tasks):
    the decision is taken again shortly."""


def entry_holds(
    playbook: NormalizedAlert, trigger: ConditionTrigger, *, wait: bool = False
) -> bool:
    """Whether the whole entry playbook holds when the trigger's bar closes:
    a trigger of one of its conditions is not enough when it has several.

    Its steps are read from the cache rows of their own pairs, at the bars of
    the bot's base timeframe closed by then (the last `validity_bars` of
    them), each step at its own timeframe's bar closed at or before each base
    bar's close, as the engine aligns them. A bar with no row has not fired;
    with `wait`, EntryNotReady when a step's pair has not reached its bar yet."""
    if len(playbook.steps) == 1:
        return True
    symbol, base = trigger.symbol, playbook.base_timeframe
    decided_ms = next_bar_open(_epoch_ms(trigger.candle_time), trigger.timeframe)
    opens = [_closed_before(decided_ms, base)]
    for _ in range(max(step.validity_bars for step in playbook.steps) - 1):
        opens.append(_closed_before(opens[-1], base))
    closes = next_bar_open(np.array(opens[::-1], dtype=np.int64), base)
    by_timeframe: dict[str, list[str]] = {}
    for step in playbook.steps:
        by_timeframe.setdefault(step.canonical["timeframe"], []).append(step.condition_id)
    raw: dict[str, np.ndarray] = {}
    for timeframe, ids in by_timeframe.items():
        own = _closed_before(closes, timeframe)
        if wait:
            cursor = EvaluationCursor.objects.filter(symbol=symbol, timeframe=timeframe).first()
            if cursor is None or _epoch_ms(cursor.last_bar) < own[-1]:
                raise EntryNotReady(f"{symbol} {timeframe} has not evaluated {own[-1]} yet")
        raw.update(fired_at(symbol, timeframe, ids, own))
    return bool(alert_signal(playbook, raw)[-1])


def fired_at(
    symbol: str, timeframe: str, ids: list[str], opens: np.ndarray
) -> dict[str, np.ndarray]:
    """Whether each condition fired at the pair's bars opened at `opens` (ms),
    from its cache rows: only the conditions' flags are read. A bar with no
    row, or a row without the condition, has not fired."""
    fired = {
        f"c{i}": KeyTransform("fired", KeyTransform(cid, "indicator_values"))
        for i, cid in enumerate(ids)
    }
    rows = (
        BarEvaluation.objects.filter(
            symbol=symbol,
            timeframe=timeframe,
            candle_time__gte=_from_epoch_ms(opens.min()),
            candle_time__lte=_from_epoch_ms(opens.max()),
        )
        .annotate(**fired)
        .values_list("candle_time", *fired)
    )
    at = {_epoch_ms(opened): flags for opened, *flags in rows}
    never = [None] * len(ids)
    return {
        cid: np.array([at.get(int(opened), never)[i] is True for opened in opens], dtype=bool)
        for i, cid in enumerate(ids)
    }


def _closed_before(ms, timeframe: str):
    """Open time of the last `timeframe` bar closed at or before `ms` (an int
    or an int64 array)."""
    return bar_open_floor(bar_open_floor(ms, timeframe) - 1, timeframe)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def handle_condition_trigger(
    subscription_id: int, condition_trigger_id: int, *, wait: bool = False
) -> None:
    """A registry condition a bot subscribes to fired: an entry, a safety
    level or a stop loss, as the subscription's bot_config says. With
    `wait`, EntryNotReady when the entry's decision needs a bar not evaluated
    yet (see entry_holds)."""
    subscription = (
        ConditionSubscription.objects.select_related("bot")
        .filter(pk=subscription_id, active=True)
        .first()
    )
    trigger = ConditionTrigger.objects.filter(pk=condition_trigger_id).first()
    if subscription is None or trigger is None:
        return
    ConditionSubscription.objects.filter(pk=subscription_id).update(
        last_triggered_at=timezone.now()
    )
    bot = subscription.bot
    config = subscription.bot_config or {}
    role = config.get("role", "entry")
    if role == "entry":
        playbook = entry_playbook(bot)
        if playbook is not None and entry_holds(playbook, trigger, wait=wait):
            # The decision is taken when the trigger's bar has closed, and
            # keyed by that moment: the triggers of its steps on several
            # timeframes that close together (a 5m and a 15m bar at 12:15)
            # open one deal, however many workers handle them.
            decided_ms = next_bar_open(_epoch_ms(trigger.candle_time), trigger.timeframe)
            deals.open_deal(
                bot.pk,
                f"entry-{decided_ms}",
                decided_ms,
                f"entry condition {trigger.condition_id[:12]}",
            )
    elif role == "safety":
        deals.on_safety_trigger(config["deal_id"], int(config["level"]))
    elif role == "stop_loss":
        deals.close_deal(config["deal_id"], Deal.CloseReason.STOP_LOSS, "stop_loss")


def _timeframe_s(timeframe: str) -> int:
    return timeframe_ms(timeframe) // 1000 if timeframe != "1M" else 30 * 86400


def open_trailing_deals(symbol: str, timeframe: str):
    """Open deals on the pair whose take profit trails: they need every closed bar."""
    return Deal.objects.filter(
        state=Deal.State.OPEN, bot__symbol=symbol, bot__base_timeframe=timeframe
    ).exclude(bot__settings__trailing_deviation=None)


def trail_open_deals(symbol: str, timeframe: str, bars: list[tuple[int, str, str]]) -> int:
    """Closed bars (open time, high, close) of a pair, for its deals' trailing take profits."""
    step_ms = _timeframe_s(timeframe) * 1000
    exits = 0
    for deal_id in open_trailing_deals(symbol, timeframe).values_list("pk", flat=True):
        for open_ms, high, close in bars:
            if (
                deals.on_bar_closed(deal_id, Decimal(high), Decimal(close), open_ms + step_ms)
                is not None
            ):
                exits += 1
                break
    return exits
