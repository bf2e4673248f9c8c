"""evaluate_symbol in this process, against PostgreSQL, Redis and the Binance
stub over HTTP: what fires, when, and what the registry records."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerts import evaluation, evaluation_store
from alerts.models import Alert, AlertTrigger, Notification, OutboxMessage
from conditions import metrics
from conditions.engine.plan import EvaluationPlan
from conditions.models import BarEvaluation, Condition, ConditionTrigger, EvaluationCursor
from conditions.services import subscribe
from tests.conftest import postgres_session
from tests.factories import BotFactory, RegisteredAlertFactory, UserFactory
from tests.pipeline.conftest import FIVE_MINUTES, bar

pytestmark = pytest.mark.django_db

# Long enough for the kline cache's memory of the forming candle to lapse, as
# it has between two polls of ALERT_RUNNER_POLL_MS.
FORMING_MEMORY_S = 0.6


def evaluate_ethbtc(**options) -> evaluation.EvaluationReport:
    return evaluation.evaluate_symbol("ETHBTC", "5m", **options)


def fired_bars(alert: Alert) -> list[int]:
    return [
        int(opened.timestamp() * 1000)
        for opened in alert.triggers.order_by("bar_open_time").values_list(
            "bar_open_time", flat=True
        )
    ]


def condition_of(alert: Alert) -> Condition:
    """The alert's one registry condition, with its evaluations counted."""
    return Condition.objects.with_evaluations().get(alerts=alert)


def cached(condition_id: str) -> list[tuple[int, dict]]:
    """The condition's values in the cache rows of ETHBTC's pairs, by bar
    (open time, ms), oldest first."""
    rows = BarEvaluation.objects.holding(condition_id, "ETHBTC").values_list(
        "candle_time", "condition_values"
    )
    return [(int(opened.timestamp() * 1000), values) for opened, values in reversed(rows)]


def test_an_alert_fires_once_per_bar_however_often_its_pair_is_evaluated(
    live, django_capture_on_commit_callbacks
):
    alert = RegisteredAlertFactory()

    with django_capture_on_commit_callbacks(execute=True):
        evaluate_ethbtc()
        evaluate_ethbtc()
    assert fired_bars(alert) == [bar(-1)]

    live.advance(FIVE_MINUTES)
    with django_capture_on_commit_callbacks(execute=True):
        evaluate_ethbtc()
        evaluate_ethbtc()

    assert fired_bars(alert) == [bar(-1), bar(0)]
    notifications = Notification.objects.filter(user=alert.user)
    assert notifications.count() == 2
    assert all("ETHBTC 5m" in n.title for n in notifications)


def test_a_per_bar_alert_fires_on_the_forming_bar_once_and_not_again_at_its_close(live):
    alert = RegisteredAlertFactory(fire_mode=Alert.FireMode.PER_BAR)

    evaluate_ethbtc(forming=True)
    assert fired_bars(alert) == [bar(0)]
    assert alert.triggers.get().snapshot["bar_closed"] is False

    live.advance(60_000)
    time.sleep(FORMING_MEMORY_S)
    evaluate_ethbtc(forming=True)
    assert fired_bars(alert) == [bar(0)], "a second poll of the same forming bar fired again"

    live.advance(FIVE_MINUTES)
    report = evaluate_ethbtc()
    assert report.bars == [bar(0)]
    assert fired_bars(alert) == [bar(0)], "the bar fired again at its close"

    time.sleep(FORMING_MEMORY_S)
    evaluate_ethbtc(forming=True)
    assert fired_bars(alert) == [bar(0), bar(1)]


def test_a_once_alert_fires_once_then_is_triggered_and_no_longer_evaluated(live):
    once = RegisteredAlertFactory(fire_mode=Alert.FireMode.ONCE)
    every_bar = RegisteredAlertFactory()

    evaluate_ethbtc()
    once.refresh_from_db()
    assert once.status == Alert.Status.TRIGGERED
    assert fired_bars(once) == [bar(-1)]

    live.advance(3 * FIVE_MINUTES)
    evaluate_ethbtc()

    once.refresh_from_db()
    assert once.status == Alert.Status.TRIGGERED
    assert fired_bars(once) == [bar(-1)]
    assert fired_bars(every_bar) == [bar(-1), bar(0), bar(1), bar(2)]


def test_an_alert_past_its_expiry_becomes_expired_and_does_not_fire(live):
    # expires_at is the user's deadline on the wall clock (the API checks it
    # against timezone.now()); the stub's clock is years behind it.
    expired = RegisteredAlertFactory(expires_at=timezone.now() - timedelta(minutes=1))
    still_running = RegisteredAlertFactory(expires_at=timezone.now() + timedelta(days=1))

    report = evaluate_ethbtc()

    expired.refresh_from_db()
    still_running.refresh_from_db()
    assert expired.status == Alert.Status.EXPIRED
    assert report.expired_alerts == 1
    assert fired_bars(expired) == []
    assert still_running.status == Alert.Status.ACTIVE
    assert fired_bars(still_running) == [bar(-1)]


def test_a_paused_alert_is_not_evaluated(live):
    active = RegisteredAlertFactory()
    paused = RegisteredAlertFactory(
        status=Alert.Status.PAUSED,
        condition_config={
            "conditions": [{"type": "price", "operator": ">", "compareValue": 0.0001}]
        },
    )

    evaluate_ethbtc()
    live.advance(FIVE_MINUTES)
    evaluate_ethbtc()

    assert fired_bars(active) == [bar(-1), bar(0)]
    assert fired_bars(paused) == []
    paused.refresh_from_db()
    assert paused.status == Alert.Status.PAUSED
    # Its condition, used by no one else, was not even computed.
    assert cached(condition_of(paused).pk) == []
    assert condition_of(paused).evaluation_count == 0


def test_a_malformed_alert_is_skipped_with_a_logged_error_and_the_others_on_its_symbol_fire(
    live, caplog
):
    before = RegisteredAlertFactory()
    unknown_indicator = RegisteredAlertFactory()
    not_an_object = RegisteredAlertFactory()
    after = RegisteredAlertFactory()
    # Rows broken behind the API's back (a bad migration, a hand-edit in SQL).
    Alert.objects.filter(pk=unknown_indicator.pk).update(
        condition_config={"conditions": [{"indicator": "NOPE", "operator": "<", "value": 1}]}
    )
    Alert.objects.filter(pk=not_an_object.pk).update(condition_config="RSI < 30")

    with caplog.at_level(logging.ERROR, logger="alerts.evaluation"):
        report = evaluate_ethbtc()

    assert fired_bars(before) == [bar(-1)]
    assert fired_bars(after) == [bar(-1)]
    assert fired_bars(unknown_indicator) == []
    assert fired_bars(not_an_object) == []
    assert sorted(report.skipped_alerts) == sorted([unknown_indicator.pk, not_an_object.pk])
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"alert {unknown_indicator.pk} " in m and "NOPE" in m for m in logged), logged
    assert any(f"alert {not_an_object.pk} " in m for m in logged), logged


def test_an_alert_broken_after_a_worker_evaluated_it_is_skipped_too(live):
    alert = RegisteredAlertFactory()
    evaluate_ethbtc()
    Alert.objects.filter(pk=alert.pk).update(
        condition_config={"conditions": [{"indicator": "NOPE", "operator": "<", "value": 1}]}
    )
    live.advance(FIVE_MINUTES)

    report = evaluate_ethbtc()

    assert report.skipped_alerts == [alert.pk]
    assert fired_bars(alert) == [bar(-1)]


def test_an_alert_edited_in_sql_after_it_fired_is_evaluated_as_edited(live):
    # A worker remembers each alert's playbook; firing updates the row too,
    # which must not make it miss the content changing behind the API's back.
    alert = RegisteredAlertFactory()
    evaluate_ethbtc()
    live.advance(FIVE_MINUTES)
    evaluate_ethbtc()
    assert fired_bars(alert) == [bar(-1), bar(0)]
    never = {"type": "price", "operator": "<", "compareWith": "value", "compareValue": 0}
    Alert.objects.filter(pk=alert.pk).update(
        condition_config={"mode": "simple", "conditions": [never]}
    )
    live.advance(FIVE_MINUTES)

    report = evaluate_ethbtc()

    assert report.skipped_alerts == []
    assert fired_bars(alert) == [bar(-1), bar(0)]


def pair_generation(symbol: str = "ETHBTC", timeframe: str = "5m") -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generation FROM alert_pair_generations WHERE symbol = %s AND timeframe = %s",
            [symbol, timeframe],
        )
        row = cursor.fetchone()
    return row[0] if row else None


ALERT_CHANGES = {
    "its conditions": ("condition_config", '{"mode": "simple", "conditions": []}'),
    "its status": ("status", "paused"),
    "its fire mode": ("fire_mode", "once"),
    "its expiry": ("expires_at", "2099-01-01T00:00:00Z"),
}


@pytest.mark.parametrize("change", ALERT_CHANGES)
def test_a_change_evaluation_reads_moves_the_pairs_alert_generation_and_firing_does_not(
    live, change
):
    alert = RegisteredAlertFactory()
    once = RegisteredAlertFactory(fire_mode=Alert.FireMode.ONCE)
    created = pair_generation()
    assert created is not None
    evaluate_ethbtc()
    # Firing wrote the alerts' last fired bar and moved the `once` one to
    # triggered: what evaluation writes does not make it read them again.
    assert Alert.objects.get(pk=alert.pk).last_fired_bar is not None
    assert Alert.objects.get(pk=once.pk).status == Alert.Status.TRIGGERED
    Alert.objects.filter(pk=alert.pk).update(name="renamed")
    assert pair_generation() == created

    column, value = ALERT_CHANGES[change]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE alerts_alert SET {column} = %s WHERE id = %s", [value, alert.pk])
    assert pair_generation() > created


def test_an_alert_moved_to_another_symbol_moves_both_pairs(live):
    alert = RegisteredAlertFactory()
    RegisteredAlertFactory(symbol="BTCUSDT")
    before = pair_generation(), pair_generation("BTCUSDT")

    Alert.objects.filter(pk=alert.pk).update(symbol="BTCUSDT")

    assert pair_generation() > before[0]
    assert pair_generation("BTCUSDT") > before[1]


def test_alerts_added_and_deleted_between_bars_are_seen_at_the_next_one(live):
    kept = RegisteredAlertFactory()
    deleted = RegisteredAlertFactory()
    evaluate_ethbtc()
    assert fired_bars(deleted) == [bar(-1)]

    added = RegisteredAlertFactory()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM alerts_alerttrigger WHERE alert_id = %s", [deleted.pk])
        cursor.execute("DELETE FROM alerts_alert_conditions WHERE alert_id = %s", [deleted.pk])
        cursor.execute("DELETE FROM alerts_alert WHERE id = %s", [deleted.pk])
    live.advance(FIVE_MINUTES)
    report = evaluate_ethbtc()

    assert fired_bars(kept) == [bar(-1), bar(0)]
    assert fired_bars(added) == [bar(0)]
    assert report.alert_triggers == 2


def test_alerts_emptied_by_truncate_are_not_evaluated_any_more(live):
    RegisteredAlertFactory()
    evaluate_ethbtc()
    with connection.cursor() as cursor:
        # The test's transaction still holds deferred foreign key checks.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE alerts_alert CASCADE")
    assert pair_generation() is None
    live.advance(FIVE_MINUTES)

    report = evaluate_ethbtc()

    assert report.alert_triggers == 0
    assert not AlertTrigger.objects.exists()


@contextmanager
def another_worker() -> Iterator[None]:
    """What runs inside, runs as a worker process that has not evaluated
    anything yet: this process's memory of pairs is put aside meanwhile."""
    kept = {name: getattr(evaluation, name).copy() for name in WORKER_MEMORY}
    for name in WORKER_MEMORY:
        getattr(evaluation, name).clear()
    try:
        yield
    finally:
        for name, memory in kept.items():
            getattr(evaluation, name).clear()
            getattr(evaluation, name).update(memory)


WORKER_MEMORY = (
    "_evaluators",
    "_remembered",
    "_pair_alerts",
    "_registered",
    "_checked_generation",
    "_registry_canonicals",
)


def test_a_worker_unaware_of_a_bar_fired_elsewhere_does_not_fire_it_again(live):
    alert = RegisteredAlertFactory(fire_mode=Alert.FireMode.PER_BAR)
    # This worker knows the alert from the closed bar before.
    evaluate_ethbtc()
    assert fired_bars(alert) == [bar(-1)]

    # Another worker fires it on the forming bar: firing does not move the
    # pair's alert generation, so this one keeps its older last fired bar.
    with another_worker():
        evaluate_ethbtc(forming=True)
    assert fired_bars(alert) == [bar(-1), bar(0)]

    time.sleep(FORMING_MEMORY_S)
    forming = evaluate_ethbtc(forming=True)
    live.advance(FIVE_MINUTES)
    closed = evaluate_ethbtc()

    assert forming.alert_triggers == closed.alert_triggers == 0
    assert fired_bars(alert) == [bar(-1), bar(0)]
    assert OutboxMessage.objects.filter(topic="alert_trigger").count() == 2


def delete_in_sql(condition_id: str) -> None:
    # What an operator's SQL would have to do: nothing refers to it anymore.
    with connection.cursor() as cursor:
        for table in ("condition_triggers", "alerts_alert_conditions", "condition_registry"):
            cursor.execute(f"DELETE FROM {table} WHERE condition_id = %s", [condition_id])


def empty_the_registry(condition_id: str) -> None:
    with connection.cursor() as cursor:
        # The test's transaction still holds deferred foreign key checks.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE condition_registry CASCADE")


REMOVALS = {
    "through the ORM": lambda cid: Condition.objects.filter(pk=cid).delete(),
    "in SQL": delete_in_sql,
    "by emptying the registry": empty_the_registry,
}


@pytest.mark.parametrize("removal", REMOVALS)
def test_a_registry_row_deleted_after_a_worker_wrote_to_it_is_registered_again(
    live, caplog, removal
):
    # A worker remembers which conditions the registry holds, so as not to ask
    # every bar; an operator deleting one, however, must not make its
    # evaluation fail.
    alert = RegisteredAlertFactory()
    condition = condition_of(alert)
    evaluate_ethbtc()
    assert [opened for opened, _ in cached(condition.pk)] == [bar(-1)]
    REMOVALS[removal](condition.pk)
    live.advance(FIVE_MINUTES)

    with caplog.at_level(logging.WARNING, logger="alerts.evaluation"):
        report = evaluate_ethbtc()

    assert "registering them again" in caplog.text
    registered = Condition.objects.with_evaluations().get(pk=condition.pk)
    # Its values at the bar before the deletion stay in the pair's cache row:
    # they are what was evaluated then. Its trigger counter started again.
    assert (registered.evaluation_count, registered.trigger_count) == (2, 1)
    assert [opened for opened, _ in cached(condition.pk)] == [bar(-1), bar(0)]
    assert report.condition_triggers == 1
    assert fired_bars(alert) == [bar(-1), bar(0)]


def test_a_condition_deleted_on_another_pair_of_its_symbol_is_registered_again(live, caplog):
    # The 15m pair finds that a registry row of ETHBTC is gone; the worker
    # must not go on trusting the 5m pair's rows either, which it has not
    # looked up since.
    five = RegisteredAlertFactory()
    fifteen = RegisteredAlertFactory(
        base_timeframe="15m",
        condition_config={
            "conditions": [{"type": "price", "operator": ">", "compareValue": 0.0002}]
        },
    )
    evaluate_ethbtc()
    evaluation.evaluate_symbol("ETHBTC", "15m")
    gone = condition_of(five).pk
    Condition.objects.filter(pk=gone).delete()
    live.advance(FIVE_MINUTES)
    # ETHBTC 15m has no new bar yet, but its write looks the registry up.
    evaluation.evaluate_symbol("ETHBTC", "15m")
    assert not Condition.objects.filter(pk=gone).exists()

    with caplog.at_level(logging.WARNING, logger="alerts.evaluation"):
        report = evaluate_ethbtc()

    assert "registering them again" in caplog.text
    assert report.condition_triggers == 1
    assert Condition.objects.with_evaluations().get(pk=gone).evaluation_count == 2
    assert condition_of(fifteen).evaluation_count == 1


def test_deleting_a_condition_waits_for_its_symbols_evaluation_write(live):
    # An evaluation writing to it would not see it go: the deletion waits
    # for the symbol's write, then moves the symbol's registry generation.
    condition = condition_of(RegisteredAlertFactory())
    with postgres_session() as other:
        other.execute(evaluation_store._LOCK_SYMBOL, [evaluation_store._SYMBOL_LOCKS, "ETHBTC"])
        release = threading.Timer(1.0, other.commit)
        release.start()
        started = time.monotonic()
        Condition.objects.filter(pk=condition.pk).delete()
        waited = time.monotonic() - started
        release.join()

    assert waited >= 1.0, "the condition was deleted while ETHBTC's write lock was held"
    assert not Condition.objects.filter(pk=condition.pk).exists()


def test_a_pairs_write_waits_for_another_write_of_its_symbol_then_lands_whole(live):
    # A symbol's pairs share registry rows (a 4h condition in 5m alerts); their
    # writes take the symbol's lock, so they queue instead of deadlocking.
    alert = RegisteredAlertFactory()
    with postgres_session() as other:
        other.execute(
            evaluation_store._LOCK_SYMBOL,
            [evaluation_store._SYMBOL_LOCKS, "ETHBTC"],
        )
        release = threading.Timer(1.0, other.commit)
        release.start()
        started = time.monotonic()
        report = evaluate_ethbtc()
        waited = time.monotonic() - started
        release.join()

    assert waited >= 1.0, "the evaluation wrote while another writer held ETHBTC's lock"
    assert report.condition_triggers == 1
    assert fired_bars(alert) == [bar(-1)]
    condition = condition_of(alert)
    assert (condition.evaluation_count, condition.trigger_count) == (1, 1)


def test_evaluating_a_bar_again_counts_neither_its_evaluation_nor_its_trigger_twice(live):
    alert = RegisteredAlertFactory()
    evaluate_ethbtc()
    # As if a second worker had read the cursor before the first one moved it.
    EvaluationCursor.objects.all().delete()

    report = evaluate_ethbtc()

    assert report.condition_triggers == 0
    condition = condition_of(alert)
    assert (condition.evaluation_count, condition.trigger_count) == (1, 1)
    assert ConditionTrigger.objects.filter(condition=condition).count() == 1
    assert fired_bars(alert) == [bar(-1)]


def test_bars_missed_while_nothing_ran_are_caught_up_but_only_the_last_few(live):
    alert = RegisteredAlertFactory()
    evaluate_ethbtc()

    # 20 bars close while no worker runs: the 12 most recent are caught up.
    live.advance(20 * FIVE_MINUTES)
    report = evaluate_ethbtc()

    caught_up = [bar(i) for i in range(20 - evaluation.MAX_CATCHUP_BARS, 20)]
    assert evaluation.MAX_CATCHUP_BARS == 12
    assert report.bars == caught_up
    assert fired_bars(alert) == [bar(-1), *caught_up]

    live.advance(3 * FIVE_MINUTES)
    report = evaluate_ethbtc()
    assert report.bars == [bar(20), bar(21), bar(22)]
    assert fired_bars(alert)[-3:] == [bar(20), bar(21), bar(22)]
    assert len(fired_bars(alert)) == 1 + 12 + 3


def test_a_catch_up_after_a_registry_row_of_its_symbol_went_counts_its_own_rows_once(live, caplog):
    # A worker finds its symbol's registry changed (another condition was
    # deleted) at a catch-up of three bars: its own conditions, each in three
    # rows, are all still registered, and nothing is registered again.
    kept = RegisteredAlertFactory()
    gone = RegisteredAlertFactory(
        condition_config={
            "conditions": [{"type": "price", "operator": ">", "compareValue": 0.0002}]
        },
    )
    evaluate_ethbtc()
    gone_id = condition_of(gone).pk
    gone.delete()
    Condition.objects.filter(pk=gone_id).delete()
    live.advance(3 * FIVE_MINUTES)

    with caplog.at_level(logging.WARNING, logger="alerts.evaluation"):
        report = evaluate_ethbtc()

    assert report.bars == [bar(0), bar(1), bar(2)]
    assert "registering them again" not in caplog.text
    assert condition_of(kept).evaluation_count == 4
    assert not Condition.objects.filter(pk=gone_id).exists()
    assert fired_bars(kept) == [bar(-1), bar(0), bar(1), bar(2)]


def test_a_condition_trigger_carries_how_many_alerts_and_bots_subscribe_to_it(live):
    alice = RegisteredAlertFactory(user=UserFactory(username="alice"))
    RegisteredAlertFactory(user=UserFactory(username="bob"))
    RegisteredAlertFactory(user=UserFactory(username="carol"), status=Alert.Status.PAUSED)
    lonely = RegisteredAlertFactory(
        condition_config={"conditions": [{"type": "price", "operator": ">", "compareValue": 1e-6}]}
    )
    shared = condition_of(alice)
    bot = BotFactory()
    subscribe(user=bot.user, bot=bot, condition=shared, bot_type="dca")

    evaluate_ethbtc()

    assert ConditionTrigger.objects.get(condition=shared).subscribers_count == 3  # 2 alerts + 1 bot
    assert ConditionTrigger.objects.get(condition=condition_of(lonely)).subscribers_count == 1


def test_a_condition_trigger_counts_the_alerts_active_when_it_is_written(live):
    # Statuses change after the alerts were linked to their condition: by an
    # update in bulk, by a save, by a `once` alert firing, and back again.
    alerts = [RegisteredAlertFactory(user=UserFactory(username=f"u{i}")) for i in range(4)]
    once = RegisteredAlertFactory(fire_mode=Alert.FireMode.ONCE)
    shared = condition_of(alerts[0])
    assert condition_of(once) == shared
    Alert.objects.filter(pk=alerts[0].pk).update(status=Alert.Status.PAUSED)
    alerts[1].status = Alert.Status.PAUSED
    alerts[1].save()

    evaluate_ethbtc()
    assert ConditionTrigger.objects.get(condition=shared).subscribers_count == 3  # 2 + `once`

    once.refresh_from_db()
    assert once.status == Alert.Status.TRIGGERED
    alerts[0].status = Alert.Status.ACTIVE
    alerts[0].save()
    live.advance(FIVE_MINUTES)
    evaluate_ethbtc()

    counts = ConditionTrigger.objects.filter(condition=shared).order_by("candle_time")
    assert [t.subscribers_count for t in counts] == [3, 3]  # the `once` one left, one came back


def test_each_condition_is_evaluated_once_per_bar_into_the_cache_and_counted_in_the_registry(
    live,
):
    first = RegisteredAlertFactory()
    RegisteredAlertFactory()  # the same condition: evaluated once for both
    rsi = RegisteredAlertFactory(
        condition_config={"conditions": [{"indicator": "RSI", "operator": "<", "value": 101}]}
    )

    evaluate_ethbtc()
    live.advance(4 * FIVE_MINUTES)  # four bars close before the next evaluation
    evaluate_ethbtc()

    bars = [bar(i) for i in range(-1, 4)]
    # One cache row per bar of the pair, holding both conditions.
    rows = BarEvaluation.objects.filter(symbol="ETHBTC", timeframe="5m").order_by("candle_time")
    assert [int(row.candle_time.timestamp() * 1000) for row in rows] == bars
    assert all(len(row.indicator_values) == 2 for row in rows)
    for condition in (condition_of(first), condition_of(rsi)):
        values = cached(condition.pk)
        assert [opened for opened, _ in values] == bars
        assert all(value["fired"] is True for _, value in values)
        assert all(value["left"] is not None for _, value in values)
        triggers = ConditionTrigger.objects.filter(condition=condition).count()
        assert triggers == len(bars)
        assert condition.evaluation_count == len(bars)
        assert condition.trigger_count == triggers
        assert condition.last_evaluated_at == rows.last().evaluated_at
        assert condition.last_triggered_at is not None

    seen = metrics.snapshot()
    assert "ETHBTC:5m" in seen["evaluation_ms_per_pair"]
    assert seen["active_alerts"] == 3
    assert seen["conditions_in_use"] == 2


def test_alert_trigger_rows_keep_what_the_condition_saw(live):
    rsi = RegisteredAlertFactory(
        condition_config={"conditions": [{"indicator": "RSI", "operator": "<", "value": 101}]}
    )

    evaluate_ethbtc()

    trigger = AlertTrigger.objects.get(alert=rsi)
    values = trigger.snapshot["values"][condition_of(rsi).pk]
    assert 0 <= values["left"] <= 100
    assert values["right"] == 101
    assert trigger.snapshot["bar_closed"] is True
    assert trigger.snapshot["close"] > 0


def test_the_evaluation_cache_holds_what_the_engine_computed_for_every_kind_of_right_side(live):
    configs = {
        "value": {"indicator": "RSI", "operator": "<", "value": 101},
        "channel": {
            "indicator": "RSI",
            "operator": "inside_channel",
            "channel": {"lower": 0, "upper": 100},
        },
        "none": {"indicator": "RSI", "operator": "bullish_divergence", "pivot": 2, "lookback": 20},
        # A week of daily candles: RSI(14) has no value yet.
        "missing": {"indicator": "RSI", "timeframe": "1d", "operator": ">", "value": 0},
    }
    alerts = {
        kind: RegisteredAlertFactory(condition_config={"conditions": [config]})
        for kind, config in configs.items()
    }

    report = evaluate_ethbtc()

    now_ms = report.bars[-1] + FIVE_MINUTES
    market = evaluation.market()
    stored = {}
    for kind, alert in alerts.items():
        condition = condition_of(alert)
        timeframes = {"5m", condition.timeframe}
        candles = {tf: market.closed_candles("ETHBTC", tf, now_ms) for tf in timeframes}
        plan = EvaluationPlan.from_identified({condition.pk: condition.indicator_config})
        series = plan.run(candles, "5m").series[condition.pk]
        expected = {**series.values_at(-1), "fired": bool(series.fired[-1])}
        ((_, stored[kind]),) = cached(condition.pk)
        assert stored[kind] == expected, kind
    assert stored["value"]["right"] == 101
    assert stored["channel"]["right"] == {"lower": 0, "upper": 100}
    assert stored["none"]["right"] is None
    assert stored["missing"]["left"] is None
    assert stored["missing"]["fired"] is False
