"""The Redis cache backend (tradeeon.cache): Django's, one client per pool."""

from __future__ import annotations

import multiprocessing


def test_every_call_uses_one_client_and_values_round_trip(redis_store):
    redis_store.set("candles", {"open": [1, 2]}, timeout=60)
    redis_store.add("count", 0)
    redis_store.incr("count", 5)

    assert redis_store.get("candles") == {"open": [1, 2]}
    assert redis_store.get("count") == 5
    assert redis_store._cache.get_client(write=True) is redis_store._cache.get_client()


def _in_child(store, queue) -> None:
    store.set("from_child", "child", timeout=60)
    queue.put(store.get("from_parent"))


def test_a_forked_worker_uses_the_client_it_inherited(redis_store):
    # Celery's prefork workers fork after the parent may have used the cache.
    redis_store.set("from_parent", "parent", timeout=60)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(redis_store, queue))
    child.start()
    child.join(30)

    assert child.exitcode == 0
    assert queue.get(timeout=5) == "parent"
    assert redis_store.get("from_child") == "child"
    assert redis_store.get("from_parent") == "parent"
