"""Operator metrics: counters per minute in the shared cache, and a snapshot
of the registry for the status endpoint and the admin."""

from __future__ import annotations

import time

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db.models import Count, Q

from .models import Condition, ConditionSubscription

WINDOW_MINUTES = 5
_TTL_S = 3600
# The evaluated pairs: a list in most caches, a set in Redis (a new key, so
# that it never meets a list left by an older version).
_PAIRS = "metrics:pairs"
_PAIR_SET = "metrics:pair_set"


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


def _redis() -> RedisCache | None:
    store = caches["default"]
    return store if isinstance(store, RedisCache) else None


def record_evaluation(symbol: str, timeframe: str, report) -> None:
    minute = _minute()
    counts = {
        f"metrics:evaluations:{minute}": report.conditions * len(report.bars),
        f"metrics:triggers:{minute}": report.alert_triggers + report.condition_triggers,
        f"metrics:pair_runs:{minute}": 1,
    }
    pair = f"{symbol}:{timeframe}"
    duration_ms = round(report.duration_ms, 2)
    redis = _redis()
    if redis is not None:
        _record_in_redis(redis, counts, pair, duration_ms)
        return
    for key, amount in counts.items():
        _incr(key, amount)
    cache.set(f"metrics:eval_ms:{pair}", duration_ms, timeout=_TTL_S)
    pairs = cache.get(_PAIRS) or []
    if pair not in pairs:
        cache.set(_PAIRS, sorted({*pairs, pair}), timeout=None)


# One command instead of a pipeline of nine, each of which the worker packs
# and parses: this runs for every pair on every bar.
# KEYS: the counters, the pair's duration, the set of pairs; ARGV: the TTL,
# the duration's value, the pair, then each counter's amount.
_RECORD_SCRIPT = """
local ttl = ARGV[1]
for i = 1, #KEYS - 2 do
    redis.call('INCRBY', KEYS[i], ARGV[i + 3])
    redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('SET', KEYS[#KEYS - 1], ARGV[2], 'EX', ttl)
redis.call('SADD', KEYS[#KEYS], ARGV[3])
redis.call('EXPIRE', KEYS[#KEYS], ttl)
"""
_record_script = None  # registered once; each call names its client


def _record_in_redis(
    store: RedisCache, counts: dict[str, int], pair: str, duration_ms: float
) -> None:
    """All in one script, as it runs for every pair on every bar. Django's
    cache API has neither, so this uses its client, with the keys and value
    encoding of the API so that readers use the API as usual (Redis keeps ints
    unpickled: INCRBY counters read back as ints)."""
    global _record_script
    backend = store._cache
    client = backend.get_client(write=True)
    if _record_script is None:
        _record_script = client.register_script(_RECORD_SCRIPT)
    counters = [(name, amount) for name, amount in counts.items() if amount > 0]
    keys = [store.make_and_validate_key(name) for name, _ in counters]
    keys += [
        store.make_and_validate_key(f"metrics:eval_ms:{pair}"),
        store.make_and_validate_key(_PAIR_SET),
    ]
    args = [_TTL_S, backend._serializer.dumps(duration_ms), pair]
    _record_script(keys=keys, args=args + [amount for _, amount in counters], client=client)


def _evaluated_pairs() -> list[str]:
    """The pairs evaluated lately, as "SYMBOL:timeframe", sorted."""
    redis = _redis()
    if redis is None:
        return cache.get(_PAIRS) or []
    members = redis._cache.get_client().smembers(redis.make_and_validate_key(_PAIR_SET))
    return sorted(member.decode() for member in members)


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
    durations = cache.get_many([f"metrics:eval_ms:{pair}" for pair in _evaluated_pairs()])
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
