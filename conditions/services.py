"""Registry operations: conditions enter the registry only through
normalization, so equal conditions always land on one row."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from conditions.engine.normalize import condition_id as make_condition_id
from conditions.engine.normalize import normalize_condition

from .models import BarEvaluation, Condition, ConditionSubscription

logger = logging.getLogger(__name__)


def condition_type(canonical: Mapping) -> str:
    left = canonical["left"]
    return left["name"].lower() if left["kind"] == "indicator" else left["kind"]


def registry_row(canonical: Mapping) -> dict:
    """The fields of a canonical condition's registry row, as it is created."""
    return {
        "condition_id": make_condition_id(canonical),
        "condition_type": condition_type(canonical),
        "symbol": canonical["symbol"],
        "timeframe": canonical["timeframe"],
        "indicator_config": dict(canonical),
        "created_at": timezone.now(),
        "trigger_count": 0,
    }


def register_canonical(canonical: Mapping) -> tuple[Condition, bool]:
    """The registry row of a canonical condition, created if new."""
    row = registry_row(canonical)
    existing = Condition.objects.filter(pk=row["condition_id"]).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return Condition.objects.create(**row), True
    except IntegrityError:
        # Another request registered the same condition a moment ago.
        return Condition.objects.get(pk=row["condition_id"]), False


def register_condition(
    raw: Mapping, *, symbol: str | None = None, timeframe: str | None = None
) -> tuple[Condition, bool]:
    """Normalize any accepted input shape and register it. Raises ConditionError."""
    return register_canonical(normalize_condition(raw, symbol=symbol, timeframe=timeframe))


def register_all(canonicals: Iterable[Mapping]) -> list[Condition]:
    """The registry rows of the conditions, in key order (as evaluations
    register them: two transactions inserting the same new rows then wait
    for each other instead of deadlocking)."""
    by_id = {make_condition_id(canonical): canonical for canonical in canonicals}
    return [register_canonical(by_id[cid])[0] for cid in sorted(by_id)]


def subscribe(
    *, user, bot, condition: Condition, bot_type: str, bot_config: Mapping | None = None
) -> tuple[ConditionSubscription, bool]:
    """One active subscription per bot and condition; subscribing again returns it."""
    existing = ConditionSubscription.objects.filter(
        bot=bot, condition=condition, active=True
    ).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return (
                ConditionSubscription.objects.create(
                    user=user,
                    bot=bot,
                    condition=condition,
                    bot_type=bot_type,
                    bot_config=dict(bot_config or {}),
                ),
                True,
            )
    except IntegrityError:
        return ConditionSubscription.objects.get(bot=bot, condition=condition, active=True), False


def unsubscribe_bot(bot, condition_ids: Iterable[str] | None = None) -> int:
    subscriptions = ConditionSubscription.objects.filter(bot=bot, active=True)
    if condition_ids is not None:
        subscriptions = subscriptions.filter(condition_id__in=list(condition_ids))
    return subscriptions.update(active=False)


def subscriber_counts(condition_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(active subscriptions, active alerts) per condition: what a trigger of
    it fans out to. Two grouped counts, each over one index."""
    from alerts.models import Alert

    ids = list(condition_ids)
    subscriptions = dict(
        ConditionSubscription.objects.filter(condition_id__in=ids, active=True)
        .values_list("condition_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    alerts = dict(
        Alert.conditions.through.objects.filter(
            condition_id__in=ids, alert__status=Alert.Status.ACTIVE
        )
        .values_list("condition_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {cid: (subscriptions.get(cid, 0), alerts.get(cid, 0)) for cid in ids}


def end_subscription(*, user, subscription_id: int) -> bool:
    """Deactivate one of the user's active subscriptions; False when there is none
    (another user's id included), so the caller can answer 404."""
    return bool(
        ConditionSubscription.objects.filter(pk=subscription_id, user=user, active=True).update(
            active=False
        )
    )


def condition_status(condition_id: str) -> dict | None:
    """A registry row as the status API shows it, with its subscriber count and
    the values of its latest evaluation; None when it is not registered."""
    condition = Condition.objects.with_evaluation_count().filter(pk=condition_id).first()
    if condition is None:
        return None
    latest = (
        BarEvaluation.objects.holding(condition_id, condition.symbol)
        .values("timeframe", "candle_time", "evaluated_at", "condition_values")
        .first()
    )
    if latest is not None:
        latest["indicator_values"] = latest.pop("condition_values")
    return {
        "condition_id": condition.condition_id,
        "symbol": condition.symbol,
        "timeframe": condition.timeframe,
        "condition_type": condition.condition_type,
        "canonical": condition.indicator_config,
        "subscribers": sum(subscriber_counts([condition_id])[condition_id]),
        "created_at": condition.created_at,
        "last_evaluated_at": latest["evaluated_at"] if latest else None,
        "last_triggered_at": condition.last_triggered_at,
        "evaluation_count": condition.evaluation_count,
        "trigger_count": condition.trigger_count,
        "latest_evaluation": latest,
    }
