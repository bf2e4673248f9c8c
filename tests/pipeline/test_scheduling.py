"""The beat tick: which pairs are due, by the exchange's clock, queued once."""

from __future__ import annotations

import time

import pytest

from alerts import evaluation, scheduling, tasks
from alerts.models import Alert, AlertTrigger
from conditions.models import EvaluationCursor
from tests.factories import RegisteredAlertFactory
from tests.pipeline.conftest import FIVE_MINUTES, bar

pytestmark = pytest.mark.django_db


def exchange_now_ms() -> int:
    return evaluation.market().source.server_time_ms()


def test_due_pairs_follow_the_exchange_clock_not_the_local_one(live):
    RegisteredAlertFactory(symbol="ETHBTC")
    RegisteredAlertFactory(symbol="LTCBTC", fire_mode=Alert.FireMode.PER_BAR)

    due = scheduling.due_pairs(exchange_now_ms())

    # The stub's clock is in January 2018; the local one is years later.
    assert due == [
        scheduling.DuePair("ETHBTC", "5m", bar(-1)),
        scheduling.DuePair("LTCBTC", "5m", bar(-1)),
        scheduling.DuePair("LTCBTC", "5m", bar(0), forming=True),
    ]


def test_the_tick_evaluates_the_bar_that_closed_on_the_exchange_and_then_nothing_until_the_next(
    live,
):
    alert = RegisteredAlertFactory()

    assert tasks.tick() == 1  # Celery runs the evaluations in this process here
    assert list(AlertTrigger.objects.values_list("alert", flat=True)) == [alert.pk]
    cursor = EvaluationCursor.objects.get(symbol="ETHBTC", timeframe="5m")
    assert int(cursor.last_bar.timestamp() * 1000) == bar(-1)

    assert tasks.tick() == 0
    # The stub stands half-way through the 12:00 bar: it closes in 2.5 minutes.
    live.advance(FIVE_MINUTES // 2 - 1)
    assert tasks.tick() == 0, "a bar still forming on the exchange was treated as closed"
    live.advance(1)
    assert tasks.tick() == 1
    assert AlertTrigger.objects.filter(alert=alert).count() == 2


def test_a_pair_already_queued_is_not_queued_again_until_its_mark_expires(live, settings):
    settings.EVALUATION_EXPIRES_S = 1
    RegisteredAlertFactory()
    now_ms = exchange_now_ms()
    due = scheduling.due_pairs(now_ms)
    assert [p.bar_open_ms for p in due] == [bar(-1)]

    # Queued, but no worker has taken it yet (or the one that did has died).
    scheduling.mark_queued(due)
    assert scheduling.due_pairs(now_ms) == []
    assert scheduling.due_pairs(now_ms + 2000) == []

    time.sleep(1.2)
    assert scheduling.due_pairs(now_ms) == due, "a lost evaluation was never queued again"


def test_the_next_bar_is_due_at_once_even_while_the_previous_one_is_still_queued(live):
    RegisteredAlertFactory()
    now_ms = exchange_now_ms()
    scheduling.mark_queued(scheduling.due_pairs(now_ms))

    later = scheduling.due_pairs(now_ms + FIVE_MINUTES)

    assert [(p.symbol, p.bar_open_ms) for p in later] == [("ETHBTC", bar(0))]


def test_per_bar_pairs_are_due_at_every_tick_for_their_forming_bar(live):
    RegisteredAlertFactory(fire_mode=Alert.FireMode.PER_BAR)
    now_ms = exchange_now_ms()
    scheduling.mark_queued(scheduling.due_pairs(now_ms))

    again = scheduling.due_pairs(now_ms + 1000)

    assert again == [scheduling.DuePair("ETHBTC", "5m", bar(0), forming=True)]
