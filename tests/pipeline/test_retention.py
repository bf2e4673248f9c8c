"""Retention: the evaluation cache keeps its days and, on a symbol with a
bot entering on several conditions, every bar that bot's entry can still
read; done outbox messages go after theirs, pending ones never."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from alerts import evaluation, retention
from alerts.models import OutboxMessage
from alerts.tasks import prune as prune_task
from bots.models import Bot
from bots.services import entry_holds, entry_playbook, subscribe_entry
from conditions.models import BarEvaluation, ConditionTrigger
from conditions.services import condition_status
from tests.conftest import manage
from tests.factories import DCA_SETTINGS, BotFactory, playbook_entry
from tests.pipeline.conftest import bar

pytestmark = pytest.mark.django_db

DAY_MS = 86_400_000
ALWAYS = {"type": "price", "operator": ">", "compareValue": 0.0001}
NEVER = {"type": "price", "operator": ">", "compareValue": 1000}


def running_bot(symbol: str, entry: dict) -> Bot:
    bot = BotFactory(
        symbol=symbol, status=Bot.Status.RUNNING, settings={**DCA_SETTINGS, "entry": entry}
    )
    subscribe_entry(bot)
    return bot


def history(symbol: str, days_ago: list[float], values: dict) -> None:
    """Older cache rows of the symbol's 5m pair, at 5m bars `days_ago` before 12:00."""
    BarEvaluation.objects.bulk_create(
        BarEvaluation(
            symbol=symbol,
            timeframe="5m",
            candle_time=evaluation.ms_to_datetime(bar(-round(days * 288))),
            indicator_values=values,
        )
        for days in days_ago
    )


def kept(symbol: str) -> list[float]:
    """The days before 12:00 of the symbol's rows, oldest first."""
    opens = BarEvaluation.objects.filter(symbol=symbol).order_by("candle_time")
    return [
        round((bar(0) - row.candle_time.timestamp() * 1000) / DAY_MS, 1)
        for row in opens.only("candle_time")
    ]


def test_old_cache_rows_go_and_a_bots_entry_window_stays(live):
    # given an ETHBTC bot whose entry needs a condition that held within
    # 3,000 5m bars (10.4 days) and one that holds now; it held 10 days ago
    old, now = ALWAYS, {**ALWAYS, "compareValue": 0.0002}
    bot = running_bot("ETHBTC", playbook_entry((old, 3000), (now, 1)))
    playbook = entry_playbook(bot)
    # and an LTCBTC bot entering on one condition, which reads no cache row
    running_bot("LTCBTC", playbook_entry((NEVER, 3000)))
    # and both pairs evaluated at 11:55, with history before that
    evaluation.evaluate_symbol("ETHBTC", "5m")
    evaluation.evaluate_symbol("LTCBTC", "5m")
    old_id = playbook.steps[0].condition_id
    history("ETHBTC", [20, 10, 2, 0.5], {old_id: {"left": 0.1, "right": 0.0001, "fired": True}})
    history("LTCBTC", [20, 10, 2, 0.5], {})
    trigger = ConditionTrigger.objects.get(
        condition_id=playbook.steps[1].condition_id, candle_time=evaluation.ms_to_datetime(bar(-1))
    )
    assert entry_holds(playbook, trigger) is True
    evaluations_before = condition_status(old_id)["evaluation_count"]

    # when a day of cache is kept
    pruned = retention.prune(bar(0), cache_days=1)

    # then LTCBTC keeps its last day; ETHBTC a day more than its bot's window
    assert kept("LTCBTC") == [0.5, 0.0]
    assert kept("ETHBTC") == [10.0, 2.0, 0.5, 0.0]
    assert pruned.evaluations == 4
    assert list(pruned.kept_for_bots) == ["ETHBTC"]
    # and the bot's entry, decided now, still finds the step that held
    assert entry_holds(playbook, trigger) is True
    # and the status API counts the bars kept, its latest one unchanged
    status = condition_status(old_id)
    assert status["evaluation_count"] == evaluations_before - 1
    assert status["latest_evaluation"]["candle_time"] == evaluation.ms_to_datetime(bar(-1))


def test_a_symbol_whose_bot_entry_cannot_be_read_keeps_every_row(live):
    history("ETHBTC", [40, 20, 0.5], {})
    bot = BotFactory(symbol="ETHBTC", settings={**DCA_SETTINGS, "entry": {"mode": "playbook"}})

    pruned = retention.prune(bar(0), cache_days=1)

    assert kept("ETHBTC") == [40.0, 20.0, 0.5]
    assert pruned.kept_for_bots == {"ETHBTC": None}
    bot.delete()
    assert retention.prune(bar(0), cache_days=1).evaluations == 2


def test_done_outbox_messages_go_after_their_days_pending_ones_never(live):
    now = timezone.now()

    def message(key: str, *, done_days_ago: float | None, created_days_ago: float = 30):
        row = OutboxMessage.objects.create(topic="alert_trigger", key=key, payload={})
        OutboxMessage.objects.filter(pk=row.pk).update(
            created_at=now - timedelta(days=created_days_ago),
            done_at=None if done_days_ago is None else now - timedelta(days=done_days_ago),
        )

    message("done long ago", done_days_ago=8)
    message("done lately", done_days_ago=6)
    message("never done", done_days_ago=None)
    message("done hours ago", done_days_ago=0.2)

    dry = retention.prune(bar(0), outbox_days=7, dry_run=True)
    assert dry.outbox_messages == 1
    assert OutboxMessage.objects.count() == 4

    assert retention.prune(bar(0), outbox_days=7).outbox_messages == 1
    assert sorted(OutboxMessage.objects.values_list("key", flat=True)) == [
        "done hours ago",
        "done lately",
        "never done",
    ]
    # a day is the least kept, beyond the webhook sweep's window
    assert retention.prune(bar(0), outbox_days=1).outbox_messages == 1
    assert sorted(OutboxMessage.objects.values_list("key", flat=True)) == [
        "done hours ago",
        "never done",
    ]


def test_the_command_reports_what_it_deleted_and_dry_run_deletes_nothing(live, capsys):
    running_bot("ETHBTC", playbook_entry((ALWAYS, 3000), (ALWAYS, 1)))
    history("ETHBTC", [40, 10], {})
    history("LTCBTC", [40, 20, 0.5], {})

    call_command("prune", "--cache-days", "7", "--dry-run")
    report = capsys.readouterr().out.splitlines()
    assert report[0] == (
        "evaluation cache: would delete 3 row(s) of bars opened before 2018-01-10 12:02 UTC "
        "(market time)"
    )
    assert report[1] == "  ETHBTC: bars from 2017-12-31 01:52 UTC kept for bots' entries"
    assert report[2].startswith("outbox: would delete 0 done message(s) finished before ")
    assert kept("LTCBTC") == [40.0, 20.0, 0.5]

    call_command("prune", "--cache-days", "7")
    assert capsys.readouterr().out.startswith("evaluation cache: deleted 3 row(s)")
    assert kept("LTCBTC") == [0.5]
    assert kept("ETHBTC") == [10.0]


@pytest.mark.parametrize("value", ["0", "-3", "a week", "1.5"])
def test_a_bad_number_of_days_is_one_line_and_exit_2(value):
    result: subprocess.CompletedProcess = manage("prune", "--outbox-days", value)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "manage.py prune: error: argument --outbox-days: expected a whole number of days, "
        f"at least 1, got {value!r}"
    ]


def test_beat_prunes_hourly_by_the_markets_clock(live, settings):
    # the stub's market is in 2018, years before the wall clock: rows within
    # its last day stay
    history("ETHBTC", [45, 0.5], {})
    assert settings.CELERY_BEAT_SCHEDULE["prune"]["task"] == "alerts.tasks.prune"

    outcome = prune_task.delay().get()

    assert outcome == {"evaluations": 1, "outbox_messages": 0}
    assert kept("ETHBTC") == [0.5]


def test_without_the_markets_clock_the_command_stops_in_one_line():
    result = manage("prune", BINANCE_API_URL="http://127.0.0.1:9/api")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "manage.py prune: error: cannot read the market's clock, nothing deleted: Binance time"
    )
