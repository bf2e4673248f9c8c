"""The event bus: Redis pub/sub, at most once, for live push to browsers.

Nothing that must happen depends on it (bot actions go through Celery and the
outbox). Without REDIS_URL (the embedded default) events are only logged.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def condition_channels(condition_id: str, symbol: str, timeframe: str) -> list[str]:
    return [f"condition.{condition_id}", f"condition.{symbol}.{timeframe}"]


def user_alerts_channel(user_id: int) -> str:
    return f"user.{user_id}.alerts"


def user_bot_channel(user_id: int, bot_id: int) -> str:
    return f"user.{user_id}.bot.{bot_id}"


def publish(channels: list[str], event: dict) -> int:
    """Publish one JSON event on each channel; returns how many were sent.
    A Redis failure is logged, never raised: the bus is best effort."""
    return publish_many([(channels, event)])


def publish_many(events: list[tuple[list[str], dict]]) -> int:
    """`publish` for many events in one round trip."""
    client = _client()
    kinds = sorted({event.get("event_type", "?") for _, event in events})
    if client is None:
        logger.debug("%d event(s) %s (no Redis: not published)", len(events), kinds)
        return 0
    pipe = client.pipeline(transaction=False)
    sent = 0
    for channels, event in events:
        body = json.dumps(event, default=str, separators=(",", ":"))
        for channel in channels:
            pipe.publish(channel, body)
            sent += 1
    try:
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("%d event(s) %s not published: %s", len(events), kinds, exc)
        return 0
    return sent
