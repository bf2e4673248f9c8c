"""Operator metrics: counters per minute in the shared cache, and a snapshot
of the registry for the status endpoint and the admin."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db.models import Count, Q

from .models import Condition, ConditionSubscription

WINDOW_MINUTES = 5
_TTL_S = 3600


def _minute(now: float | None = None) -> int:
    return int((now or time.time()) // 60)


def _incr(key: str, amount: int) -> None:
    if amount <= 0:
        return
    cache.add(key, 0, timeout=_TTL_S)
    try:
        cache.incr(key, amount)
    except ValueError:  # expired between add and incr
        cache.set(key, amount, timeout=_TTL_S)


def record_evaluation(symbol: str, timeframe: str, report) -> None:
    minute = _minute()
    _incr(f"metrics:evaluations:{minute}", report.conditions * len(report.bars))
    _incr(f"metrics:triggers:{minute}", report.alert_triggers + report.condition_triggers)
    _incr(f"metrics:pair_runs:{minute}", 1)
    cache.set(f"metrics:eval_ms:{symbol}:{timeframe}", round(report.duration_ms, 2), timeout=_TTL_S)
    pairs = cache.get("metrics:pairs") or []
    if f"{symbol}:{timeframe}" not in pairs:
        cache.set("metrics:pairs", sorted({*pairs, f"{symbol}:{timeframe}"}), timeout=None)


def per_minute(name: str) -> float:
    """Average over the last complete minutes."""
    current = _minute()
    keys = [f"metrics:{name}:{current - offset}" for offset in range(1, WINDOW_MINUTES + 1)]
    values = cache.get_many(keys)
    return round(sum(values.values()) / WINDOW_MINUTES, 2)


def snapshot() -> dict:
    """What an operator wants to see at a glance."""
    from alerts.models import Alert

    active_alerts = Alert.objects.filter(status=Alert.Status.ACTIVE)
    alert_refs = Alert.conditions.through.objects.filter(alert__status=Alert.Status.ACTIVE).count()
    bot_subscriptions = ConditionSubscription.objects.filter(active=True).count()
    in_use = Condition.objects.annotate(
        users=Count("subscriptions", filter=Q(subscriptions__active=True), distinct=True)
        + Count("alerts", filter=Q(alerts__status=Alert.Status.ACTIVE), distinct=True)
    ).filter(users__gt=0)
    unique_in_use = in_use.count()
    top = [
        {
            "condition_id": row.condition_id,
            "symbol": row.symbol,
            "timeframe": row.timeframe,
            "subscribers": row.users,
        }
        for row in in_use.order_by("-users")[:10]
    ]
    pairs = cache.get("metrics:pairs") or []
    durations = cache.get_many([f"metrics:eval_ms:{pair}" for pair in pairs])
    references = alert_refs + bot_subscriptions
    return {
        "unique_conditions": Condition.objects.count(),
        "conditions_in_use": unique_in_use,
        "active_alerts": active_alerts.count(),
        "bot_subscriptions": bot_subscriptions,
        "condition_references": references,
        "subscribers_per_condition": round(references / unique_in_use, 2) if unique_in_use else 0.0,
        "evaluations_avoided_per_bar": max(references - unique_in_use, 0),
        "evaluations_per_minute": per_minute("evaluations"),
        "triggers_per_minute": per_minute("triggers"),
        "evaluation_ms_per_pair": {
            key.removeprefix("metrics:eval_ms:"): value for key, value in sorted(durations.items())
        },
        "top_conditions": top,
    }
