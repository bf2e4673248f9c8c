"""Bot tasks: thin; each takes ids, calls one service function."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(ignore_result=True, max_retries=5)
def bot_action(subscription_id: int, condition_trigger_id: int) -> None:
    services.handle_condition_trigger(subscription_id, condition_trigger_id)
