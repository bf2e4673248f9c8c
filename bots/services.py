"""Bot operations: starting and pausing bots, and what a registry trigger means for a bot."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.db import transaction
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from conditions.engine.playbook import NormalizedAlert, alert_signal, normalize_alert
from conditions.engine.timeframes import timeframe_ms
from conditions.models import BarEvaluation, ConditionSubscription, ConditionTrigger
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


def entry_holds(playbook: NormalizedAlert, trigger: ConditionTrigger) -> bool:
    """Whether the whole entry playbook holds at the trigger's bar, from the
    cache rows of the pair that evaluated it (its last `validity_bars`): a
    trigger of one of its conditions is not enough when the playbook has
    several. A condition of another timeframe counts at its latest bar
    closed by then; one with no evaluation there has not fired."""
    if len(playbook.steps) == 1:
        return True
    symbol, timeframe = trigger.symbol, trigger.timeframe
    window = max(step.validity_bars for step in playbook.steps)
    steps = {step.condition_id: step.canonical["timeframe"] for step in playbook.steps}
    axis = fired_by_bar(symbol, timeframe, list(steps), trigger.candle_time, window)
    times = axis.pop("candle_time")
    if len(times) == 0 or times[-1] != _epoch_ms(trigger.candle_time):
        return False
    closes = times + _timeframe_s(timeframe) * 1000
    for cid, other in steps.items():
        if other == timeframe:
            continue
        # Its own timeframe's latest bar closed at or before each of the axis's
        # closes: those opened from a bar before the first close's.
        step_ms = _timeframe_s(other) * 1000
        first, last = _from_epoch_ms(closes[0] - 2 * step_ms), _from_epoch_ms(closes[-1] - step_ms)
        own = fired_by_bar(symbol, other, [cid], last, first_open=first)
        latest = np.searchsorted(own["candle_time"] + step_ms, closes, side="right") - 1
        held = np.append(own[cid], False)  # index -1: no bar of its closed by then
        axis[cid] = held[latest]
    return bool(alert_signal(playbook, axis)[-1])


def fired_by_bar(
    symbol: str,
    timeframe: str,
    ids: list[str],
    last_open: datetime,
    bars: int | None = None,
    first_open: datetime | None = None,
) -> dict[str, np.ndarray]:
    """Whether each condition fired at the pair's evaluated bars opened at or
    before `last_open` (its last `bars`, or those opened from `first_open`),
    oldest first, with the bars' open times (ms) as `candle_time`. Only the
    conditions' flags are read from the rows."""
    fired = {
        f"c{i}": KeyTransform("fired", KeyTransform(cid, "indicator_values"))
        for i, cid in enumerate(ids)
    }
    rows = BarEvaluation.objects.filter(
        symbol=symbol, timeframe=timeframe, candle_time__lte=last_open
    )
    if first_open is not None:
        rows = rows.filter(candle_time__gte=first_open)
    rows = rows.annotate(**fired).order_by("-candle_time").values_list("candle_time", *fired)
    found = list(rows[:bars] if bars is not None else rows)[::-1]
    columns = {"candle_time": np.array([_epoch_ms(row[0]) for row in found], dtype=np.int64)}
    for i, cid in enumerate(ids):
        columns[cid] = np.array([row[i + 1] is True for row in found], dtype=bool)
    return columns


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def handle_condition_trigger(subscription_id: int, condition_trigger_id: int) -> None:
    """A registry condition a bot subscribes to fired: an entry, a safety
    level or a stop loss, as the subscription's bot_config says."""
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
    candle_ms = int(trigger.candle_time.timestamp() * 1000)
    if role == "entry":
        playbook = entry_playbook(bot)
        if playbook is not None and entry_holds(playbook, trigger):
            # The bar's close: the decision is taken when the bar has closed.
            close_ms = candle_ms + int(
                timedelta(seconds=_timeframe_s(bot.base_timeframe)).total_seconds() * 1000
            )
            deals.open_deal(
                bot.pk,
                f"entry-{candle_ms}",
                close_ms,
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
