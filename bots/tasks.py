"""Bot tasks: thin; each takes ids, calls one service function."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from . import orders, services
from .exchanges.base import ExchangeRateLimited

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, max_retries=5)
def bot_action(subscription_id: int, condition_trigger_id: int) -> None:
    services.handle_condition_trigger(subscription_id, condition_trigger_id)


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


@shared_task(ignore_result=True)
def reconcile_orders() -> int:
    """Beat: orders we are unsure of, then asap bots that may enter again."""
    from alerts.evaluation import market

    touched = orders.reconcile_orders()
    services.enter_asap_bots(market().source.server_time_ms())
    return touched


@worker_ready.connect
def reconcile_at_start(sender=None, **kwargs) -> None:
    # Orders a previous worker left in `submitted` are looked up before anything else.
    reconcile_orders.delay()
