"""The Redis cache backend (tradeeon.cache): Django's, one client per pool."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
import redis

from tests.marketdata.conftest import REDIS_URL
from tradeeon.cache import RedisCache


@pytest.fixture
def store():
    prefix = f"test-cache-{uuid.uuid4().hex[:12]}"
    yield RedisCache(REDIS_URL, {"KEY_PREFIX": prefix})
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


def test_every_call_uses_one_client_and_values_round_trip(store):
    store.set("candles", {"open": [1, 2]}, timeout=60)
    store.add("count", 0)
    store.incr("count", 5)

    assert store.get("candles") == {"open": [1, 2]}
    assert store.get("count") == 5
    assert store._cache.get_client(write=True) is store._cache.get_client()


def _in_child(store, queue) -> None:
    store.set("from_child", "child", timeout=60)
    queue.put(store.get("from_parent"))


def test_a_forked_worker_uses_the_client_it_inherited(store):
    # Celery's prefork workers fork after the parent may have used the cache.
    store.set("from_parent", "parent", timeout=60)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(store, queue))
    child.start()
    child.join(30)

    assert child.exitcode == 0
    assert queue.get(timeout=5) == "parent"
    assert store.get("from_child") == "child"
    assert store.get("from_parent") == "parent"
