"""A bot whose entry is a playbook of several conditions: a trigger of one of
them opens a deal only when the whole playbook holds when its bar closes, at
the bot's base bars, as read from the cache rows the pipeline wrote (steps of
other timeframes at their own bars closed by then)."""

from __future__ import annotations

import csv

import pytest

from alerts import evaluation
from bots.models import Bot, Deal
from bots.services import EntryNotReady, entry_holds, entry_playbook, subscribe_entry
from bots.tasks import bot_action
from conditions.engine.playbook import NormalizedAlert
from conditions.models import ConditionSubscription, ConditionTrigger
from tests.factories import DCA_SETTINGS, BotFactory, playbook_entry
from tests.pipeline.conftest import FIVE_MINUTES, KLINES_DIR, bar
from tradeeon.celery import app as celery_app

pytestmark = pytest.mark.django_db

ALWAYS = {"type": "price", "operator": ">", "compareValue": 0.0001}
NEVER = {"type": "price", "operator": ">", "compareValue": 1000}


def closes_of(*opened: int) -> list[float]:
    with open(KLINES_DIR / "ETHBTC-5m.csv") as candles:
        close = {int(row["open_time"]): float(row["close"]) for row in csv.DictReader(candles)}
    return [close[ms] for ms in opened]


def bot_entering_on(*steps: tuple[dict, int], **settings) -> NormalizedAlert:
    """A running bot on ETHBTC 5m whose entry needs every (condition,
    validity in bars), subscribed to its conditions; its entry playbook."""
    entry = playbook_entry(*steps)
    bot = BotFactory(
        status=Bot.Status.RUNNING, settings={**DCA_SETTINGS, **settings, "entry": entry}
    )
    subscribe_entry(bot)
    return entry_playbook(bot)


def test_an_entry_holds_only_with_every_step_valid_at_the_triggers_bar(live):
    # given a condition that held at the bar before the trigger's, not at it
    earlier, now = closes_of(bar(-1), bar(0))
    moved = {
        "type": "price",
        "operator": ">" if earlier > now else "<",
        "compareValue": (earlier + now) / 2,
    }
    within = bot_entering_on((ALWAYS, 1), (moved, 2))
    expired = bot_entering_on((ALWAYS, 1), (moved, 1))
    never = bot_entering_on((ALWAYS, 1), (NEVER, 5))
    on_15m = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "timeframe": "15m"}, 1))
    never_on_15m = bot_entering_on((ALWAYS, 1), ({**NEVER, "timeframe": "15m"}, 1))

    # when the pipeline evaluates ETHBTC's 5m and 15m pairs at two 5m bars
    for _ in range(2):
        evaluation.evaluate_symbol("ETHBTC", "5m")
        evaluation.evaluate_symbol("ETHBTC", "15m")
        live.advance(FIVE_MINUTES)

    # then the always-true condition's trigger at the second bar opens a deal
    # only where every other step held within its validity
    always = ConditionTrigger.objects.get(
        condition_id=within.steps[0].condition_id, candle_time=evaluation.ms_to_datetime(bar(0))
    )
    assert entry_holds(within, always) is True
    assert entry_holds(expired, always) is False
    assert entry_holds(never, always) is False
    assert entry_holds(on_15m, always) is True
    assert entry_holds(never_on_15m, always) is False
    # and a trigger of the 15m step (its bar 11:45, closed at 12:00) is
    # decided at the 5m bar closed then, 11:55, not at a 15m bar of the 5m step
    quarter = ConditionTrigger.objects.get(
        condition_id=on_15m.steps[1].condition_id,
        candle_time=evaluation.ms_to_datetime(bar(-3)),
    )
    assert quarter.timeframe == "15m"
    assert entry_holds(on_15m, quarter) is True
    assert entry_holds(expired, quarter) is True  # `moved` held at 11:55 (not at 12:00)


def test_an_entry_waits_for_a_step_whose_pair_has_not_evaluated_its_bar_yet(live):
    # given a 5m bot with a 15m step, and only the 5m pair evaluated so far
    playbook = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "timeframe": "15m"}, 1))
    evaluation.evaluate_symbol("ETHBTC", "5m")
    trigger = ConditionTrigger.objects.get(condition_id=playbook.steps[0].condition_id)

    # then the decision waits (the task retries) rather than read a missing
    # bar as not fired; at the last attempt it is taken on what is there
    with pytest.raises(EntryNotReady):
        entry_holds(playbook, trigger, wait=True)
    assert entry_holds(playbook, trigger) is False
    # and once the 15m pair has evaluated, the entry holds
    evaluation.evaluate_symbol("ETHBTC", "15m")
    assert entry_holds(playbook, trigger, wait=True) is True


def test_an_entry_does_not_hold_at_a_bar_its_pair_has_not_evaluated(live):
    playbook = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "compareValue": 0.0002}, 1))
    evaluation.evaluate_symbol("ETHBTC", "5m")
    trigger = ConditionTrigger.objects.get(condition_id=playbook.steps[0].condition_id)
    assert entry_holds(playbook, trigger) is True

    trigger.candle_time = evaluation.ms_to_datetime(bar(1))  # no cache row there yet
    assert entry_holds(playbook, trigger) is False


def test_a_bot_action_retries_until_its_entry_can_be_decided_then_opens_one_deal(
    live, django_capture_on_commit_callbacks
):
    # given a 5m bot with a 15m step, the 5m step's trigger, and no 15m bar
    # yet (tasks run here, their retries too, as a worker would run them)
    celery_app.conf.task_eager_propagates = False  # the live fixture restores it
    playbook = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "timeframe": "15m"}, 1))
    evaluation.evaluate_symbol("ETHBTC", "5m")
    trigger = ConditionTrigger.objects.get(condition_id=playbook.steps[0].condition_id)
    subscription = ConditionSubscription.objects.get(condition_id=trigger.condition_id)

    # when the bot action runs before the 15m pair has evaluated, it retries,
    # and its last attempt decides on what is there: no deal
    result = bot_action.apply(args=(subscription.pk, trigger.pk))
    assert result.successful()  # its last attempt decided
    assert not Deal.objects.filter(bot=subscription.bot).exists()

    # and once the 15m pair has evaluated, the same action opens the deal, once
    evaluation.evaluate_symbol("ETHBTC", "15m")
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            bot_action.apply(args=(subscription.pk, trigger.pk))
    assert Deal.objects.filter(bot=subscription.bot).count() == 1


def test_triggers_of_two_timeframes_closing_together_open_one_deal(
    live, django_capture_on_commit_callbacks
):
    # given a 5m bot that may hold several deals, with a 15m step, both steps
    # true, up to the 15m bar closing at 12:15 with the 5m bar opened at 12:10
    playbook = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "timeframe": "15m"}, 1), max_active_deals=3)
    for _ in range(3):
        live.advance(FIVE_MINUTES)
    evaluation.evaluate_symbol("ETHBTC", "5m")
    evaluation.evaluate_symbol("ETHBTC", "15m")
    five = ConditionTrigger.objects.get(
        condition_id=playbook.steps[0].condition_id,
        candle_time=evaluation.ms_to_datetime(bar(2)),
    )
    fifteen = ConditionTrigger.objects.get(
        condition_id=playbook.steps[1].condition_id, candle_time=evaluation.ms_to_datetime(bar(0))
    )
    subscriptions = {s.condition_id: s for s in ConditionSubscription.objects.filter(active=True)}

    # when each trigger's bot action runs
    with django_capture_on_commit_callbacks(execute=True):
        for trigger in (five, fifteen):
            bot_action.apply(args=(subscriptions[trigger.condition_id].pk, trigger.pk))

    # then both decided at 12:15: one deal
    deals = Deal.objects.filter(bot=subscriptions[five.condition_id].bot)
    assert [deal.entry_key for deal in deals] == [f"entry-{bar(3)}"]
