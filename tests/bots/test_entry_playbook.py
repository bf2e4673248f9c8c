"""A bot whose entry is a playbook of several conditions: a trigger of one of
them opens a deal only when the whole playbook holds at its bar, as read from
the cache rows the pipeline wrote (conditions of other timeframes included)."""

from __future__ import annotations

import csv

import pytest

from alerts import evaluation
from bots.services import entry_holds, entry_playbook, subscribe_entry
from conditions.engine.playbook import NormalizedAlert
from conditions.models import ConditionTrigger
from tests.factories import BotFactory
from tests.pipeline.conftest import FIVE_MINUTES, KLINES_DIR, bar

pytestmark = pytest.mark.django_db

ALWAYS = {"type": "price", "operator": ">", "compareValue": 0.0001}
NEVER = {"type": "price", "operator": ">", "compareValue": 1000}


def closes_of(*opened: int) -> list[float]:
    with open(KLINES_DIR / "ETHBTC-5m.csv") as candles:
        close = {int(row["open_time"]): float(row["close"]) for row in csv.DictReader(candles)}
    return [close[ms] for ms in opened]


def bot_entering_on(*steps: tuple[dict, int]) -> NormalizedAlert:
    """A bot on ETHBTC 5m whose entry needs every (condition, validity in
    bars), subscribed to its conditions; its entry playbook."""
    entry = {
        "mode": "playbook",
        "conditions": [
            {
                "condition": condition,
                "priority": priority,
                "validityDuration": validity,
                "validityDurationUnit": "bars",
            }
            for priority, (condition, validity) in enumerate(steps, start=1)
        ],
        "gateLogic": "ALL",
    }
    bot = BotFactory(settings={"base_order_size": "100", "entry": entry})
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


def test_an_entry_does_not_hold_at_a_bar_its_pair_has_not_evaluated(live):
    playbook = bot_entering_on((ALWAYS, 1), ({**ALWAYS, "compareValue": 0.0002}, 1))
    evaluation.evaluate_symbol("ETHBTC", "5m")
    trigger = ConditionTrigger.objects.get(condition_id=playbook.steps[0].condition_id)
    assert entry_holds(playbook, trigger) is True

    trigger.candle_time = evaluation.ms_to_datetime(bar(1))  # no cache row there yet
    assert entry_holds(playbook, trigger) is False
