"""Bot operations."""

from __future__ import annotations

import logging

from django.utils import timezone

from conditions.models import ConditionSubscription, ConditionTrigger

logger = logging.getLogger(__name__)


def handle_condition_trigger(subscription_id: int, condition_trigger_id: int) -> None:
    """A registry condition a bot subscribes to fired. Records it on the
    subscription; the DCA logic decides what the bot does with it."""
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
    logger.info(
        "bot %s: condition %s fired at %s",
        subscription.bot_id,
        trigger.condition_id[:12],
        trigger.candle_time,
    )


def entry_playbook(bot):
    """The bot's entry conditions as a normalized playbook, or None for asap."""
    from conditions.engine.playbook import normalize_alert

    entry = bot.settings.get("entry") or {"mode": "asap"}
    if entry.get("mode") == "asap":
        return None
    return normalize_alert(
        {"conditionConfig": entry}, symbol=bot.symbol, base_timeframe=bot.base_timeframe
    )


def subscribe_entry(bot) -> list[str]:
    """Register the bot's entry conditions and subscribe the bot to them, so
    identical entries across bots share one evaluation."""
    from conditions.services import register_canonical, subscribe

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
