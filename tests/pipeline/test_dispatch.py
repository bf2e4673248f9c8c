"""What follows a trigger, in this process: the outbox, its sweeper, and
dispatch that does each thing once however often it runs."""

from __future__ import annotations

import pytest

from alerts import dispatch, evaluation, tasks
from alerts.models import AlertTrigger, Notification, OutboxMessage, WebhookDelivery
from tests.factories import AlertTriggerFactory, RegisteredAlertFactory
from tests.pipeline.conftest import bar

pytestmark = pytest.mark.django_db


def test_the_sweeper_resends_an_outbox_message_a_dead_worker_left_behind(live, settings):
    alert = RegisteredAlertFactory()
    # The worker commits the trigger and its outbox row, then dies before
    # queueing dispatch: on_commit callbacks never run in this test.
    evaluation.evaluate_symbol("ETHBTC", "5m")
    message = OutboxMessage.objects.get()
    assert message.key == f"alert_trigger:{AlertTrigger.objects.get(alert=alert).pk}"
    assert not Notification.objects.exists()

    settings.OUTBOX_SWEEP_AFTER_S = 30
    assert dispatch.sweep_outbox() == 0, "a message that may still be on its way was re-sent"

    settings.OUTBOX_SWEEP_AFTER_S = 0
    assert dispatch.sweep_outbox() == 1

    message.refresh_from_db()
    assert message.done_at is not None
    assert message.attempts == 1
    assert Notification.objects.get().trigger.alert == alert
    assert dispatch.sweep_outbox() == 0
    assert Notification.objects.count() == 1


def test_dispatching_one_trigger_twice_notifies_once_and_posts_each_webhook_attempt_once(
    live, receiver, django_capture_on_commit_callbacks
):
    alert = RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})
    with django_capture_on_commit_callbacks(execute=True):
        evaluation.evaluate_symbol("ETHBTC", "5m")
    message = OutboxMessage.objects.get()
    trigger = AlertTrigger.objects.get(alert=alert)
    assert int(trigger.bar_open_time.timestamp() * 1000) == bar(-1)

    # The same message again (a redelivery), the handler again (a sweep racing
    # the first run), and the same webhook attempt again.
    tasks.process_outbox(message.pk)
    dispatch.dispatch_alert_trigger(message.payload)
    tasks.deliver_webhook(trigger.pk, 1)

    assert Notification.objects.filter(trigger=trigger).count() == 1
    assert receiver.count() == 1
    delivery = WebhookDelivery.objects.get(trigger=trigger)
    assert (delivery.attempt, delivery.outcome, delivery.status_code) == (1, "delivered", 200)


def test_the_sweeper_requeues_a_webhook_retry_the_broker_lost(live, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_S = 0
    receiver.answers = [500]
    trigger = AlertTriggerFactory(
        alert=RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})
    )
    # The first attempt fails; its retry was waiting in the broker, which lost it.
    assert dispatch.deliver_webhook(trigger.pk, 1) == 0

    settings.OUTBOX_SWEEP_AFTER_S = 30
    assert dispatch.sweep_outbox() == 0, "a retry that may still be on its way was re-queued"

    settings.OUTBOX_SWEEP_AFTER_S = 0
    assert dispatch.sweep_outbox() == 1
    rows = WebhookDelivery.objects.filter(trigger=trigger).order_by("attempt")
    assert [(r.attempt, r.outcome) for r in rows] == [(1, "retrying"), (2, "delivered")]
    assert receiver.count() == 2
    assert dispatch.sweep_outbox() == 0


def test_a_batch_notifies_every_alert_once_posts_each_webhook_once_and_leaves_bot_work_to_its_handler(
    live, receiver, django_capture_on_commit_callbacks
):
    notified = [RegisteredAlertFactory() for _ in range(3)]
    hooked = RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})
    # The trigger of an alert deleted since: its message is done, with nothing to do.
    gone = RegisteredAlertFactory()
    evaluation.evaluate_symbol("ETHBTC", "5m")
    ids = list(OutboxMessage.objects.values_list("pk", flat=True))
    assert len(ids) == 5
    gone.delete()
    other = OutboxMessage.objects.create(topic="unknown", key="unknown:1", payload={})

    with django_capture_on_commit_callbacks(execute=True):
        tasks.process_outbox_batch([*ids, other.pk])
        tasks.process_outbox_batch(ids)  # the sweeper sends it again

    for alert in [*notified, hooked]:
        assert Notification.objects.filter(trigger__alert=alert).count() == 1
    assert Notification.objects.count() == 4
    assert receiver.count() == 1
    assert WebhookDelivery.objects.get().trigger.alert == hooked
    done = OutboxMessage.objects.filter(pk__in=ids)
    assert all(message.done_at is not None and message.attempts == 1 for message in done)
    other.refresh_from_db()
    assert other.done_at is None and other.last_error == "unknown topic unknown"
