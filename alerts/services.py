"""Alert operations: saving keeps the registry in step with the playbook."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.db import transaction

from conditions.engine.playbook import NormalizedAlert, normalize_alert
from conditions.services import register_all

from .models import Alert

logger = logging.getLogger(__name__)

_normalized: dict[int, tuple[object, NormalizedAlert]] = {}


def alert_input(alert: Alert) -> dict:
    return {
        "symbol": alert.symbol,
        "base_timeframe": alert.base_timeframe,
        "conditionConfig": alert.condition_config,
        "fireMode": alert.fire_mode,
    }


def normalized_alert(alert: Alert) -> NormalizedAlert:
    """The alert's normalized playbook; kept per process until the row changes.
    Raises ConditionError for an alert that cannot be evaluated."""
    remembered = _normalized.get(alert.pk)
    if remembered and remembered[0] == alert.updated_at:
        return remembered[1]
    normalized = normalize_alert(alert_input(alert))
    _normalized[alert.pk] = (alert.updated_at, normalized)
    return normalized


@transaction.atomic
def save_alert(alert: Alert) -> NormalizedAlert:
    """Validate, save, and register the alert's conditions. Raises ConditionError."""
    normalized = normalize_alert(alert_input(alert))
    alert.symbol = normalized.symbol
    alert.base_timeframe = normalized.base_timeframe
    alert.save()
    alert.conditions.set(register_all(step.canonical for step in normalized.steps))
    return normalized


def create_alert(
    *, user, symbol: str, base_timeframe: str, condition_config: Mapping, **fields
) -> Alert:
    alert = Alert(
        user=user,
        symbol=symbol,
        base_timeframe=base_timeframe,
        condition_config=dict(condition_config),
        **fields,
    )
    save_alert(alert)
    return alert


def set_status(alert: Alert, status: str) -> Alert:
    alert.status = status
    alert.save(update_fields=["status", "updated_at"])
    return alert
