"""Bot tasks: thin; each takes ids, calls one service function."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.core.cache import cache

from . import orders, services
from .exchanges.base import ExchangeRateLimited

logger = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, max_retries=5)
def bot_action(self, subscription_id: int, condition_trigger_id: int) -> None:
    # An entry whose decision needs a bar another pair has not evaluated yet
    # waits for it; at the last attempt it is decided on what is there.
    wait = self.request.retries < self.max_retries
    try:
        services.handle_condition_trigger(subscription_id, condition_trigger_id, wait=wait)
    except services.EntryNotReady as exc:
        raise self.retry(countdown=2 * (1 + self.request.retries)) from exc


@shared_task(bind=True, ignore_result=True, max_retries=8)
def place_order(self, order_id: int) -> None:
    try:
        orders.place_order(order_id)
    except ExchangeRateLimited as exc:
        raise self.retry(countdown=exc.retry_after_s) from exc
    except orders.OutcomeUnknown as exc:
        raise self.retry(countdown=orders.retry_delay_s() * (1 + self.request.retries)) from exc


@shared_task(bind=True, ignore_result=True, max_retries=8)
def cancel_order(self, order_id: int) -> None:
    try:
        orders.cancel_order(order_id)
    except ExchangeRateLimited as exc:
        raise self.retry(countdown=exc.retry_after_s) from exc
    except orders.OutcomeUnknown as exc:
        raise self.retry(countdown=min(2**self.request.retries, 30)) from exc


@shared_task(ignore_result=True)
def trail_deals(symbol: str, timeframe: str, bars: list) -> int:
    return services.trail_open_deals(symbol, timeframe, [tuple(bar) for bar in bars])


@shared_task(ignore_result=True)
def enter_asap(bot_id: int) -> None:
    from alerts.evaluation import market

    services.enter_asap(bot_id, market().source.server_time_ms())


# Beat queues a reconciliation every RECONCILE_INTERVAL_S whether or not the
# last one has finished; a beat run that finds another under way does nothing.
RECONCILE_LOCK = "bots:reconcile-orders"
RECONCILE_LOCK_S = 300


@shared_task(ignore_result=True)
def reconcile_orders(settle_s: float | None = None) -> int:
    """Orders we are unsure of, then asap bots that may enter again. From
    beat (`settle_s` None): one run at a time, and orders changed in the
    last ORDER_SETTLE_S left to their own tasks."""
    if settle_s is not None:
        return _reconcile(settle_s)
    if not cache.add(RECONCILE_LOCK, 1, timeout=RECONCILE_LOCK_S):
        return 0
    try:
        return _reconcile(settings.ORDER_SETTLE_S)
    finally:
        cache.delete(RECONCILE_LOCK)


def _reconcile(settle_s: float) -> int:
    from alerts.evaluation import market

    touched = orders.reconcile_orders(settle_s=settle_s)
    services.enter_asap_bots(market().source.server_time_ms())
    return touched


@worker_ready.connect
def reconcile_at_start(sender=None, **kwargs) -> None:
    # Orders a previous worker left in `new` or `submitted` are looked up
    # before anything else, however recent: nothing else will send them.
    reconcile_orders.delay(settle_s=0)
