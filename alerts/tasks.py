"""Celery tasks: thin; each takes ids, calls one service function."""

from __future__ import annotations

import logging

from celery import group, shared_task

from conditions.marketdata.base import RateLimited

from . import dispatch, evaluation, retention, scheduling

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def tick() -> int:
    """Beat, every second: fan out one evaluate_symbol per due pair."""
    now_ms = evaluation.market().source.server_time_ms()
    due = scheduling.due_pairs(now_ms)
    if not due:
        return 0
    scheduling.mark_queued(due)
    group(
        evaluate_symbol.s(p.symbol, p.timeframe, now_ms=now_ms, forming=p.forming).set(
            expires=scheduling.forming_expiry_s() if p.forming else scheduling.evaluation_expiry_s()
        )
        for p in due
    ).apply_async()
    return len(due)


@shared_task(bind=True, ignore_result=True, max_retries=5)
def evaluate_symbol(
    self, symbol: str, timeframe: str, now_ms: int | None = None, forming: bool = False
) -> dict:
    try:
        report = evaluation.evaluate_symbol(symbol, timeframe, now_ms=now_ms, forming=forming)
    except RateLimited as exc:
        raise self.retry(countdown=exc.retry_after_s) from exc
    return {
        "bars": len(report.bars),
        "alert_triggers": report.alert_triggers,
        "condition_triggers": report.condition_triggers,
    }


@shared_task(bind=True, ignore_result=True, max_retries=10, default_retry_delay=2)
def process_outbox(self, message_id: int) -> None:
    try:
        dispatch.process_outbox(message_id)
    except Exception as exc:
        logger.warning("outbox message %s failed (%s); retrying", message_id, exc)
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc


@shared_task(ignore_result=True)
def process_outbox_batch(message_ids: list[int]) -> None:
    """A task per evaluation rather than per message: the per-task overhead was
    most of a notification's cost. Alert triggers are done together; should
    that fail, and for every other message, each is done (and retried) alone."""
    try:
        rest = dispatch.process_alert_trigger_batch(message_ids)
    except Exception:
        logger.exception("outbox batch failed; doing its messages one by one")
        rest = message_ids
    for message_id in rest:
        try:
            dispatch.process_outbox(message_id)
        except Exception as exc:
            logger.warning("outbox message %s failed (%s); retrying it alone", message_id, exc)
            process_outbox.apply_async((message_id,), countdown=2)


@shared_task(ignore_result=True)
def deliver_webhook(trigger_id: int, attempt: int) -> None:
    delay = dispatch.deliver_webhook(trigger_id, attempt)
    if delay is not None:
        deliver_webhook.apply_async((trigger_id, attempt + 1), countdown=delay)


@shared_task(ignore_result=True)
def sweep_outbox() -> int:
    return dispatch.sweep_outbox()


@shared_task(ignore_result=True)
def prune() -> dict:
    """Beat, hourly: the evaluation cache and done outbox messages past their
    retention (alerts/retention.py)."""
    pruned = retention.prune(evaluation.market().source.server_time_ms())
    logger.info(
        "pruned %d evaluation cache row(s) and %d done outbox message(s)",
        pruned.evaluations,
        pruned.outbox_messages,
    )
    return {"evaluations": pruned.evaluations, "outbox_messages": pruned.outbox_messages}
