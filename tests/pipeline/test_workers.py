"""Real Celery workers (and beat) against the Redis broker, PostgreSQL and the
Binance stub: triggers are never doubled by racing workers, never lost with a
killed one, and survive what Binance throws at them."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from alerts.models import (
    Alert,
    AlertTrigger,
    Notification,
    OutboxMessage,
    WebhookDelivery,
    WebhookSecret,
)
from alerts.webhooks import EVENT_HEADER, SIGNATURE_HEADER
from conditions.models import ConditionTrigger, EvaluationCursor
from tests.conftest import postgres_session
from tests.factories import RegisteredAlertFactory
from tests.pipeline.conftest import FIVE_MINUTES, bar, wait_until

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


def fired(alert: Alert) -> Counter:
    """How many times the alert fired at each bar (open time in ms)."""
    return Counter(
        int(opened.timestamp() * 1000)
        for opened in AlertTrigger.objects.filter(alert=alert).values_list(
            "bar_open_time", flat=True
        )
    )


def notified(alert: Alert) -> int:
    return Notification.objects.filter(trigger__alert=alert).count()


def evaluate_now(processes, stub, times: int = 1) -> None:
    """What the tick would queue for ETHBTC 5m, `times` times at once."""
    now_ms = stub.now_ms()
    for _ in range(times):
        processes.send("alerts.tasks.evaluate_symbol", "ETHBTC", "5m", now_ms=now_ms)


def test_two_workers_racing_on_one_pair_fire_its_alert_once_per_bar(processes, stub, receiver):
    # Given an alert whose webhook fails once, and two idle workers
    receiver.answers = [500]
    alert = RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})
    processes.start_worker("a")
    processes.start_worker("b")
    # Both workers' first market-data requests are held a second, so their
    # evaluations of the bar overlap instead of running one after the other.
    stub.inject_fault("hang", count=2, seconds=1, path="/api/v3/time")

    # When the same evaluation is queued six times at once
    evaluate_now(processes, stub, times=6)

    # Then the bar fires once, is told once, and its webhook is retried after a pause
    wait_until(
        lambda: WebhookDelivery.objects.filter(outcome="delivered").exists(),
        30,
        "the webhook to be delivered",
        processes.logs,
    )
    assert fired(alert) == {bar(-1): 1}
    assert notified(alert) == 1
    assert ConditionTrigger.objects.count() == 1
    evaluated_the_bar = [
        line
        for name in ("a", "b")
        for line in processes.log(name).splitlines()
        if "alerts.tasks.evaluate_symbol[" in line and "'bars': 1," in line
    ]
    assert len(evaluated_the_bar) == 2, "the two workers did not both evaluate the bar"
    rows = WebhookDelivery.objects.order_by("attempt")
    assert [(r.attempt, r.status_code, r.outcome) for r in rows] == [
        (1, 500, "retrying"),
        (2, 200, "delivered"),
    ]
    first, second = receiver.requests
    assert second.at - first.at >= 0.45  # WEBHOOK_RETRY_BASE_S is 0.5 for the workers
    assert first.headers[EVENT_HEADER] == second.headers[EVENT_HEADER]

    # And the next bar, raced again, fires once more
    stub.advance(FIVE_MINUTES)
    evaluate_now(processes, stub, times=6)
    wait_until(
        lambda: WebhookDelivery.objects.filter(outcome="delivered").count() == 2,
        30,
        "the second bar's webhook",
        processes.logs,
    )
    time.sleep(1)  # the other five evaluations of it finish
    assert fired(alert) == {bar(-1): 1, bar(0): 1}
    assert notified(alert) == 2
    assert receiver.count() == 3


def test_a_worker_killed_mid_evaluation_loses_nothing_once_another_worker_runs(processes, stub):
    # Given an alert, beat, and a worker whose market-data request hangs
    alert = RegisteredAlertFactory()
    stub.inject_fault("hang", seconds=30, path="/api/v3/klines")
    processes.start_worker("doomed")
    processes.start_beat()
    wait_until(
        lambda: any(r.fault == "hang" for r in stub.request_log()),
        20,
        "the worker to be stuck in the evaluation",
        processes.logs,
    )

    # When that worker is killed in the middle of the evaluation
    processes.kill("doomed")
    assert fired(alert) == {}
    processes.start_worker("survivor")

    # Then the tick queues the evaluation again and the bar fires once
    wait_until(lambda: notified(alert) == 1, 30, "the bar to fire", processes.logs)
    cursor = EvaluationCursor.objects.get(symbol="ETHBTC", timeframe="5m")
    assert int(cursor.last_bar.timestamp() * 1000) == bar(-1)

    # And when the dead worker's message comes back (its visibility timeout
    # passes), nothing is doubled
    processes.restore_unacked()
    time.sleep(2)
    assert fired(alert) == {bar(-1): 1}
    assert notified(alert) == 1


@contextmanager
def user_row_locked(user_id: int) -> Iterator[None]:
    """Holds the user's row FOR UPDATE in another session: creating their
    notification (its foreign key check) waits until the block ends."""
    with postgres_session() as other:
        other.execute("SELECT 1 FROM auth_user WHERE id = %s FOR UPDATE", [user_id])
        yield
        other.rollback()


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            [connection.settings_dict["NAME"]],
        )
        return cursor.fetchone()[0] > 0


def test_workers_killed_mid_dispatch_and_mid_webhook_lose_nothing_and_double_nothing(
    processes, stub, receiver
):
    # Given a webhook alert whose bar has fired, and dispatch held while it
    # commits the notification (foreign keys are checked at commit)
    receiver.answers = ["block"]
    alert = RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})
    processes.start_worker("first")
    with user_row_locked(alert.user_id):
        evaluate_now(processes, stub)
        wait_until(
            lambda: (
                OutboxMessage.objects.filter(attempts=1, done_at__isnull=True).exists()
                and waiting_on_a_lock()
            ),
            30,
            "dispatch to start and wait",
            processes.logs,
        )

        # When the worker dispatching it is killed
        processes.kill("first")
    # Its notification may still land (the commit was on its way), but it
    # never got to mark the message done, nor to queue the webhook.
    time.sleep(0.5)
    assert notified(alert) <= 1
    assert OutboxMessage.objects.get().done_at is None
    assert receiver.count() == 0

    # Then the sweeper sends it again and another worker dispatches it
    processes.start_worker("second")
    processes.sweep_until(lambda: receiver.count() == 1, "the webhook to be posted")
    assert notified(alert) == 1

    # When the worker posting the webhook is killed while the receiver holds the request
    processes.kill("second")
    receiver.release.set()

    # Then another worker posts it again, once
    processes.start_worker("third")
    processes.sweep_until(
        lambda: WebhookDelivery.objects.filter(outcome="delivered").exists(),
        "the webhook to be delivered after the kill",
    )
    processes.restore_unacked()  # what the dead workers held comes back, later
    time.sleep(2)

    assert fired(alert) == {bar(-1): 1}
    assert notified(alert) == 1
    assert WebhookDelivery.objects.filter(outcome="delivered").count() == 1
    assert OutboxMessage.objects.filter(done_at__isnull=True).count() == 0
    # The receiver saw the request cut by the kill and its one re-send: the same
    # event id (so it can drop a duplicate), both signed with the user's secret.
    secret = WebhookSecret.objects.get(user=alert.user).secret
    assert receiver.count() == 2
    for request in receiver.requests:
        expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers[SIGNATURE_HEADER] == expected
    assert len({r.headers[EVENT_HEADER] for r in receiver.requests}) == 1


def test_binance_429_418_500_and_hangs_are_survived_and_every_bar_fires_once(processes, stub):
    alert = RegisteredAlertFactory()
    processes.start_worker("worker")
    processes.start_beat()
    wait_until(lambda: notified(alert) == 1, 30, "the first bar to fire", processes.logs)

    faults = [
        ("429", {"retry_after": 1}),  # the task retries after Retry-After
        ("418", {"retry_after": 1}),
        ("500", {"count": 2}),  # the market-data client retries by itself
        ("500", {"count": 4}),  # it gives up; the tick queues the pair again
        ("hang", {"seconds": 5}),  # cut at BINANCE_TIMEOUT_S, then retried
    ]
    for offset, (kind, options) in enumerate(faults):
        stub.inject_fault(kind, path="/api/v3/klines", **options)
        stub.advance(FIVE_MINUTES)
        wait_until(
            lambda offset=offset: fired(alert).get(bar(offset)),
            30,
            f"bar {offset} to fire despite a {kind}",
            processes.logs,
        )
        assert any(r.fault == kind for r in stub.request_log("/api/v3/klines")), kind

    wait_until(lambda: notified(alert) == 1 + len(faults), 20, "every bar's notification")
    assert fired(alert) == {bar(offset): 1 for offset in range(-1, len(faults))}
