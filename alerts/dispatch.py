"""What follows a trigger: in-app notification, webhook, events, bot actions.

Everything here may run twice (a worker dies after doing the work but before
acknowledging it, or the sweeper re-sends a message): every effect is keyed
by a unique constraint, so running twice does it once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Exists, F, OuterRef, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from conditions.models import ConditionSubscription, ConditionTrigger

from . import events, webhooks
from .models import AlertTrigger, Notification, OutboxMessage, WebhookDelivery, WebhookSecret

logger = logging.getLogger(__name__)

MAX_OUTBOX_ATTEMPTS = 20
# Lost webhook attempts are looked for this far back: far longer than any
# retry schedule or sweeper outage, short enough to stay cheap.
WEBHOOK_SWEEP_WINDOW = timedelta(hours=6)


def send_outbox(message_ids: list[int]) -> None:
    """Queue the messages (called after the commit that wrote them): one task
    for what one evaluation produced, each message still done on its own."""
    from .tasks import process_outbox_batch

    OutboxMessage.objects.filter(pk__in=message_ids, sent_at__isnull=True).update(
        sent_at=timezone.now()
    )
    try:
        process_outbox_batch.delay(list(message_ids))
    except Exception:  # broker down: the sweeper will send them
        logger.exception(
            "%d outbox message(s) not queued; the sweeper will retry", len(message_ids)
        )


def sweep_outbox() -> int:
    """Re-send what a crashed worker (or a broker outage) left behind."""
    # A message sent but not done after OUTBOX_SWEEP_AFTER_S is presumed lost with its worker.
    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_SWEEP_AFTER_S)
    stale = list(
        OutboxMessage.objects.filter(
            done_at__isnull=True, created_at__lte=cutoff, attempts__lt=MAX_OUTBOX_ATTEMPTS
        )
        .exclude(sent_at__gt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[:1000]
    )
    if stale:
        logger.warning("re-sending %d outbox message(s) left behind", len(stale))
        OutboxMessage.objects.filter(pk__in=stale).update(sent_at=None)
        send_outbox(stale)
    return len(stale) + sweep_webhooks(cutoff)


def sweep_webhooks(cutoff: datetime) -> int:
    """Queue again the webhook attempts a dead worker took with it.

    The outbox is done with a trigger once dispatch has queued its first
    webhook attempt, and a retry lives only in the broker until it runs, so an
    attempt lost with its worker (or with the broker) is found here: the first
    attempt of a dispatched trigger with no delivery row, or the attempt after
    a `retrying` row whose time is long past.
    """
    from .tasks import deliver_webhook

    recent = timezone.now() - WEBHOOK_SWEEP_WINDOW
    dispatched = (
        OutboxMessage.objects.filter(
            topic="alert_trigger", done_at__gte=recent, done_at__lte=cutoff
        )
        .annotate(
            trigger_id=Cast(KeyTextTransform("alert_trigger_id", "payload"), BigIntegerField())
        )
        .values("trigger_id")
    )
    lost = [
        (trigger_id, 1)
        for trigger_id in AlertTrigger.objects.filter(
            pk__in=Subquery(dispatched),
            alert__action__type="webhook",
            webhook_deliveries__isnull=True,
        ).values_list("pk", flat=True)
    ]
    next_attempt = WebhookDelivery.objects.filter(
        trigger=OuterRef("trigger"), attempt=OuterRef("attempt") + 1
    )
    lost += [
        (trigger_id, attempt + 1)
        for trigger_id, attempt in WebhookDelivery.objects.filter(
            outcome=WebhookDelivery.Outcome.RETRYING,
            next_retry_at__gte=recent,
            next_retry_at__lte=cutoff,
        )
        .exclude(Exists(next_attempt))
        .values_list("trigger_id", "attempt")
    ]
    if lost:
        logger.warning("re-queueing %d webhook attempt(s) left behind", len(lost))
    for trigger_id, attempt in lost:
        deliver_webhook.delay(trigger_id, attempt)
    return len(lost)


def process_outbox(message_id: int) -> None:
    message = OutboxMessage.objects.filter(pk=message_id).first()
    if message is None or message.done_at is not None:
        return
    OutboxMessage.objects.filter(pk=message_id).update(attempts=message.attempts + 1)
    handler = HANDLERS.get(message.topic)
    if handler is None:
        OutboxMessage.objects.filter(pk=message_id).update(
            last_error=f"unknown topic {message.topic}"
        )
        logger.error("outbox message %s has an unknown topic %r", message_id, message.topic)
        return
    try:
        handler(message.payload)
    except Exception as exc:
        OutboxMessage.objects.filter(pk=message_id).update(
            last_error=f"{type(exc).__name__}: {exc}"[:500]
        )
        raise
    OutboxMessage.objects.filter(pk=message_id).update(done_at=timezone.now(), last_error="")


def dispatch_alert_trigger(payload: dict) -> None:
    trigger = (
        AlertTrigger.objects.select_related("alert").filter(pk=payload["alert_trigger_id"]).first()
    )
    if trigger is not None:
        _dispatch_alert_triggers([trigger])


def process_alert_trigger_batch(message_ids: list[int]) -> list[int]:
    """Do the alert-trigger messages among `message_ids` together, each effect
    as `process_outbox` does it one message at a time but in one statement
    for the batch: what it costs is round trips and commits, not the work.
    Returns the other messages, to be done one by one."""
    messages = OutboxMessage.objects.filter(pk__in=message_ids, done_at__isnull=True)
    batch, rest = {}, []
    for pk, topic, payload in messages.values_list("pk", "topic", "payload"):
        if topic == "alert_trigger":
            batch[pk] = payload["alert_trigger_id"]
        else:
            rest.append(pk)
    if batch:
        done = OutboxMessage.objects.filter(pk__in=batch)
        done.update(attempts=F("attempts") + 1)
        triggers = AlertTrigger.objects.select_related("alert").filter(pk__in=batch.values())
        _dispatch_alert_triggers(list(triggers))
        done.update(done_at=timezone.now(), last_error="")
    return rest


def _dispatch_alert_triggers(triggers: list[AlertTrigger]) -> None:
    """Notifications (one per trigger, however often this runs), events, and
    each webhook's first attempt unless one was already made."""
    Notification.objects.bulk_create(
        [_notification(trigger) for trigger in triggers], ignore_conflicts=True
    )
    events.publish_many(
        [
            ([events.user_alerts_channel(trigger.alert.user_id)], _event(trigger))
            for trigger in triggers
        ]
    )
    webhooks = {
        trigger.pk for trigger in triggers if (trigger.alert.action or {}).get("type") == "webhook"
    }
    if webhooks:
        from .tasks import deliver_webhook

        tried = set(
            WebhookDelivery.objects.filter(trigger__in=webhooks).values_list(
                "trigger_id", flat=True
            )
        )
        for trigger_id in sorted(webhooks - tried):
            deliver_webhook.delay(trigger_id, 1)


def _notification(trigger: AlertTrigger) -> Notification:
    alert = trigger.alert
    title = f"{alert.name or 'Alert'}: {alert.symbol} {alert.base_timeframe}"
    close = trigger.snapshot.get("close")
    body = f"Fired at the bar opening {trigger.bar_open_time:%Y-%m-%d %H:%M} UTC" + (
        f", close {close:g}." if close is not None else "."
    )
    return Notification(trigger=trigger, user_id=alert.user_id, title=title[:200], body=body)


def _event(trigger: AlertTrigger) -> dict:
    alert = trigger.alert
    return {
        "event_type": "alert.triggered",
        "alert_id": alert.pk,
        "alert_trigger_id": trigger.pk,
        "condition_id": next(iter(trigger.snapshot.get("values", {})), None),
        "symbol": alert.symbol,
        "timeframe": alert.base_timeframe,
        "triggered_at": trigger.fired_at.isoformat(),
        "bar_open_time": trigger.bar_open_time.isoformat(),
        "trigger_value": trigger.snapshot,
    }


def dispatch_condition_trigger(payload: dict) -> None:
    trigger = ConditionTrigger.objects.filter(pk=payload["condition_trigger_id"]).first()
    if trigger is None:
        return
    event = {
        "event_type": "condition.triggered",
        "condition_id": trigger.condition_id,
        "symbol": trigger.symbol,
        "timeframe": trigger.timeframe,
        "triggered_at": trigger.triggered_at.isoformat(),
        "candle_time": trigger.candle_time.isoformat(),
        "trigger_value": trigger.trigger_value,
    }
    events.publish(
        events.condition_channels(trigger.condition_id, trigger.symbol, trigger.timeframe), event
    )
    from bots.tasks import bot_action

    subscriptions = ConditionSubscription.objects.filter(
        condition_id=trigger.condition_id, active=True
    )
    for subscription in subscriptions:
        events.publish(
            [events.user_bot_channel(subscription.user_id, subscription.bot_id)],
            {**event, "bot_id": subscription.bot_id, "bot_config": subscription.bot_config},
        )
        bot_action.delay(subscription.pk, trigger.pk)
    ConditionTrigger.objects.filter(pk=trigger.pk).update(processed=True)


HANDLERS = {
    "alert_trigger": dispatch_alert_trigger,
    "condition_trigger": dispatch_condition_trigger,
}


def webhook_payload(trigger: AlertTrigger) -> dict:
    alert = trigger.alert
    return {
        "event_id": f"alert_trigger:{trigger.pk}",
        "event_type": "alert.triggered",
        "sent_at": timezone.now().isoformat(),
        "alert": {
            "id": alert.pk,
            "name": alert.name,
            "symbol": alert.symbol,
            "timeframe": alert.base_timeframe,
        },
        "bar_open_time": trigger.bar_open_time.isoformat(),
        "fired_at": trigger.fired_at.isoformat(),
        "snapshot": trigger.snapshot,
    }


def retry_delay_s(attempt: int) -> float:
    return settings.WEBHOOK_RETRY_BASE_S * 2 ** (attempt - 1)


def deliver_webhook(trigger_id: int, attempt: int) -> float | None:
    """One attempt, recorded; returns the delay before the next attempt, or None.

    The trigger's row stays locked during the attempt, so a duplicate of it
    (a redelivered task, or one the sweeper queued while the first ran late)
    waits, then finds the attempt recorded and does not post a second time.
    A worker that dies mid-attempt takes its lock with its connection.
    """
    user_id = (
        AlertTrigger.objects.filter(pk=trigger_id).values_list("alert__user_id", flat=True).first()
    )
    if user_id is None:
        return None
    # Committed before anything is signed with it: a secret rolled back with a
    # dead worker's attempt would have signed a request no receiver can verify.
    secret, _ = WebhookSecret.objects.get_or_create(user_id=user_id)
    with transaction.atomic():
        trigger = (
            AlertTrigger.objects.select_related("alert")
            .select_for_update(no_key=True, of=("self",))
            .filter(pk=trigger_id)
            .first()
        )
        return _attempt_webhook(trigger, attempt, secret) if trigger is not None else None


def _attempt_webhook(trigger: AlertTrigger, attempt: int, secret: WebhookSecret) -> float | None:
    if WebhookDelivery.objects.filter(trigger=trigger, attempt=attempt).exists():
        return None  # this attempt already ran (a redelivered task)
    if WebhookDelivery.objects.filter(
        trigger=trigger, outcome=WebhookDelivery.Outcome.DELIVERED
    ).exists():
        return None
    url = (trigger.alert.action or {}).get("url", "")
    try:
        addresses = webhooks.check_webhook_url(url)
    except webhooks.WebhookURLRefused as exc:
        _record_delivery(
            trigger,
            url,
            attempt,
            webhooks.Attempt(None, "", str(exc)),
            WebhookDelivery.Outcome.REFUSED,
            None,
        )
        return None
    result = webhooks.post(
        url,
        webhooks.encode(webhook_payload(trigger)),
        secret.secret,
        f"alert_trigger:{trigger.pk}",
        addresses,
    )
    if result.delivered:
        outcome, delay = WebhookDelivery.Outcome.DELIVERED, None
    elif result.retryable and attempt < settings.WEBHOOK_MAX_ATTEMPTS:
        outcome, delay = WebhookDelivery.Outcome.RETRYING, retry_delay_s(attempt)
    else:
        outcome, delay = WebhookDelivery.Outcome.FAILED, None
    next_retry = timezone.now() + timedelta(seconds=delay) if delay is not None else None
    if not _record_delivery(trigger, url, attempt, result, outcome, next_retry):
        return None
    return delay


def _record_delivery(trigger, url, attempt, result, outcome, next_retry) -> bool:
    try:
        with transaction.atomic():
            WebhookDelivery.objects.create(
                trigger=trigger,
                url=url[:500],
                attempt=attempt,
                status_code=result.status_code,
                response_excerpt=result.excerpt,
                error=result.error[:500],
                outcome=outcome,
                next_retry_at=next_retry,
            )
    except IntegrityError:
        return False
    return True
