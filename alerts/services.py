"""Alert operations: saving keeps the registry in step with the playbook."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from conditions.engine.backtest import CandleSet, iso_utc, run_backtest
from conditions.engine.errors import ConditionError
from conditions.engine.playbook import NormalizedAlert, normalize_alert
from conditions.marketdata.binance import BinanceSource
from conditions.marketdata.cache import KlineCache
from conditions.services import register_all

from .models import Alert, Notification, WebhookSecret, new_webhook_secret

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
    """The alert's normalized playbook, kept per process while what it is made
    from stays the same: keyed on the content, not on updated_at, which a raw
    update (an operator's SQL, a migration) leaves alone.
    Raises ConditionError for an alert that cannot be evaluated."""
    source = json.dumps(alert_input(alert), sort_keys=True, default=str)
    remembered = _normalized.get(alert.pk)
    if remembered and remembered[0] == source:
        return remembered[1]
    normalized = normalize_alert(alert_input(alert))
    _normalized[alert.pk] = (source, normalized)
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


PREVIEW_TIMEOUT_S = 4.0


def save_user_alert(alert: Alert) -> NormalizedAlert:
    """save_alert, within ALERT_MAX_ALERTS_PER_SYMBOL alerts per user and symbol
    (alerts of every status count: the limit is on what a user keeps, not on
    what runs). Raises ConditionError naming `symbol` beyond it."""
    limit = settings.ALERT_MAX_ALERTS_PER_SYMBOL
    symbol = str(alert.symbol).strip().upper()
    with transaction.atomic():
        # Locking the user row serializes one user's saves, so two concurrent
        # creates cannot both pass the count.
        get_user_model().objects.select_for_update().filter(pk=alert.user_id).exists()
        others = Alert.objects.filter(user_id=alert.user_id, symbol=symbol)
        if alert.pk is not None:
            others = others.exclude(pk=alert.pk)
        count = others.count()
        if count >= limit:
            raise ConditionError(
                "symbol",
                f"at most {limit} alerts per symbol: you already have {count} on {symbol}; "
                "delete some first",
            )
        return save_alert(alert)


@lru_cache(maxsize=1)
def preview_market() -> KlineCache:
    """The kline cache the workers fill (same store, same entries), read through
    a source with a budget that fits a web request: the workers' source may
    retry for 40 s, longer than gunicorn lets a request run."""
    return KlineCache(
        BinanceSource(
            timeout_s=min(settings.BINANCE_TIMEOUT_S, PREVIEW_TIMEOUT_S),
            max_attempts=2,
            max_wait_s=2.0,
            backoff_cache=caches["default"],
        ),
        key_prefix=settings.KLINE_CACHE_PREFIX,
    )


def preview_alert(raw: Mapping, *, bars: int) -> dict:
    """When the alert would have fired over the last `bars` closed candles.

    The candles come from the kline cache the workers share (so a preview
    usually costs no exchange request) with the same history the workers
    evaluate with, so indicator values match the live ones. Raises
    ConditionError for a bad alert and MarketDataError when candles cannot be had.
    """
    # alerts.evaluation imports this module.
    from .evaluation import HISTORY_BARS

    normalized = normalize_alert(raw)
    source = preview_market()
    now_ms = source.source.server_time_ms()
    timeframes = {normalized.base_timeframe} | {
        step.canonical["timeframe"] for step in normalized.steps
    }
    sets = [
        CandleSet(
            normalized.symbol,
            timeframe,
            source.closed_candles(normalized.symbol, timeframe, now_ms, HISTORY_BARS),
        )
        for timeframe in sorted(timeframes)
    ]
    base = next(s.candles for s in sets if s.timeframe == normalized.base_timeframe)
    answer = {
        "symbol": normalized.symbol,
        "base_timeframe": normalized.base_timeframe,
        "bars": 0,
        "from": None,
        "to": None,
        "triggers": [],
        "conditions": [
            {"condition_id": step.condition_id, "canonical": step.canonical}
            for step in normalized.steps
        ],
    }
    if base.empty:
        return answer
    document = run_backtest({**raw, "symbol": normalized.symbol}, sets)
    open_times = base["open_time"].to_numpy()
    window = min(bars, len(open_times))
    first_open = iso_utc(int(open_times[-window]))
    answer.update(
        bars=window,
        to=iso_utc(int(open_times[-1])),
        triggers=[
            _finite(trigger)
            for trigger in document["triggers"]
            if trigger["bar_open_time"] >= first_open
        ],
        conditions=document["conditions"],
    )
    answer["from"] = first_open
    return answer


def _finite(value: object) -> object:
    """JSON has no infinities or NaN; an indicator can produce them."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def rotate_webhook_secret(user) -> WebhookSecret:
    """A new signing secret for the user's webhooks; the old one stops working."""
    secret, created = WebhookSecret.objects.get_or_create(user=user)
    if not created:
        secret.secret = new_webhook_secret()
        secret.save(update_fields=["secret", "rotated_at"])
    return secret


def mark_notifications_read(user, notification_ids: list[int] | None = None) -> int:
    """Mark the user's unread notifications read (all of them, or these); how many."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if notification_ids is not None:
        unread = unread.filter(pk__in=notification_ids)
    return unread.update(read_at=timezone.now())
