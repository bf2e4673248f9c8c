from __future__ import annotations

import pandas as pd
import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from conditions.marketdata.binance import BinanceSource
from conditions.marketdata.cache import KlineCache
from conditions.marketdata.replay import ReplaySource
from tests.marketdata.conftest import DAY_START, FIVE_MINUTES, HOUR

BAR_OPEN = DAY_START + 12 * HOUR  # the bar the stub fixture's clock is half-way through


def file_rows_closed_by(candles: pd.DataFrame, now_ms: int, count: int) -> pd.DataFrame:
    closed = candles[candles["open_time"] + FIVE_MINUTES <= now_ms]
    return closed.tail(count).reset_index(drop=True)


def kline_requests(stub) -> list[dict[str, str]]:
    return [record.params for record in stub.request_log("/api/v3/klines")]


def test_a_second_call_after_one_candle_closed_fetches_only_that_candle(
    stub, redis_store, eth_candles
):
    cache = KlineCache(BinanceSource(stub.url), redis_store)

    # Given a first call that loads the history
    first = cache.closed_candles("ETHBTC", "5m", now_ms=stub.now_ms(), history=300)
    pd.testing.assert_frame_equal(first, file_rows_closed_by(eth_candles, stub.now_ms(), 300))
    assert len(kline_requests(stub)) == 1

    # When the same bar is asked for again, by this worker or another one
    again = KlineCache(BinanceSource(stub.url), redis_store)
    pd.testing.assert_frame_equal(again.closed_candles("ETHBTC", "5m", stub.now_ms(), 300), first)
    assert len(kline_requests(stub)) == 1  # nothing new has closed: no request

    # When one more candle closes
    stub.advance(FIVE_MINUTES)
    stub.clear_request_log()
    second = cache.closed_candles("ETHBTC", "5m", now_ms=stub.now_ms(), history=300)

    # Then only that candle is fetched, from the last cached open time on
    [params] = kline_requests(stub)
    assert int(params["startTime"]) == BAR_OPEN - FIVE_MINUTES + 1
    assert int(params["endTime"]) == BAR_OPEN + FIVE_MINUTES - 1
    assert second["open_time"].iloc[-1] == BAR_OPEN
    pd.testing.assert_frame_equal(second, file_rows_closed_by(eth_candles, stub.now_ms(), 300))


def test_a_long_history_is_fetched_in_pages_of_a_thousand(stub, redis_store, eth_candles):
    cache = KlineCache(BinanceSource(stub.url), redis_store)

    candles = cache.closed_candles("ETHBTC", "5m", now_ms=stub.now_ms(), history=2500)

    assert len(kline_requests(stub)) == 3
    assert all(params["limit"] == "1000" for params in kline_requests(stub))
    pd.testing.assert_frame_equal(candles, file_rows_closed_by(eth_candles, stub.now_ms(), 2500))


def test_it_returns_only_candles_closed_at_now_even_when_it_holds_newer(
    stub, redis_store, eth_candles
):
    cache = KlineCache(BinanceSource(stub.url), redis_store)
    cache.closed_candles("ETHBTC", "5m", now_ms=stub.now_ms(), history=200)

    earlier = stub.now_ms() - HOUR
    candles = cache.closed_candles("ETHBTC", "5m", now_ms=earlier, history=100)

    pd.testing.assert_frame_equal(candles, file_rows_closed_by(eth_candles, earlier, 100))
    assert len(kline_requests(stub)) == 1


def test_a_caller_ahead_of_the_server_gets_only_what_the_server_has_closed(stub, redis_store):
    cache = KlineCache(BinanceSource(stub.url), redis_store)
    ahead = stub.now_ms() + 3 * FIVE_MINUTES

    candles = cache.closed_candles("ETHBTC", "5m", now_ms=ahead, history=10)
    assert candles["open_time"].iloc[-1] == BAR_OPEN - FIVE_MINUTES

    # Once the server catches up, the missing candles are fetched after all.
    stub.set_time(ahead)
    candles = cache.closed_candles("ETHBTC", "5m", now_ms=ahead, history=10)
    assert candles["open_time"].iloc[-1] == BAR_OPEN + 2 * FIVE_MINUTES
    assert len(kline_requests(stub)) == 2


def test_coarser_timeframes_are_cached_separately(stub, redis_store):
    cache = KlineCache(BinanceSource(stub.url), redis_store)

    hours = cache.closed_candles("ETHBTC", "1h", now_ms=stub.now_ms(), history=24)
    minutes = cache.closed_candles("ETHBTC", "5m", now_ms=stub.now_ms(), history=24)

    assert hours["open_time"].iloc[-1] == BAR_OPEN - HOUR
    assert (hours["open_time"] % HOUR == 0).all()
    assert minutes["open_time"].iloc[-1] == BAR_OPEN - FIVE_MINUTES
    assert [params["interval"] for params in kline_requests(stub)] == ["1h", "5m"]


def test_the_forming_candle_is_read_fresh_not_from_the_shared_cache(stub, redis_store):
    cache = KlineCache(BinanceSource(stub.url), redis_store, forming_ttl_s=0)

    forming = cache.forming_candle("ETHBTC", "5m")
    assert forming is not None and forming["open_time"].tolist() == [BAR_OPEN]

    stub.advance(FIVE_MINUTES)
    assert cache.forming_candle("ETHBTC", "5m")["open_time"].tolist() == [BAR_OPEN + FIVE_MINUTES]
    assert redis_store.get("marketdata:klines:ETHBTC:5m") is None


def test_the_forming_candle_is_asked_once_per_tick(stub, redis_store):
    cache = KlineCache(BinanceSource(stub.url), redis_store, forming_ttl_s=60)

    cache.forming_candle("ETHBTC", "5m")
    cache.forming_candle("ETHBTC", "5m")

    assert len(kline_requests(stub)) == 1


def test_the_cache_works_over_the_replay_source_and_the_default_store(market, eth_candles):
    source = ReplaySource(market, start=BAR_OPEN + 1)
    cache = KlineCache(source, key_prefix="test-marketdata-replay")
    try:
        assert cache.store is caches["default"]
        candles = cache.closed_candles("ETHBTC", "5m", now_ms=source.server_time_ms(), history=50)
        pd.testing.assert_frame_equal(candles, file_rows_closed_by(eth_candles, BAR_OPEN + 1, 50))
        with pytest.raises(ValueError):
            cache.closed_candles("ETHBTC", "5m", now_ms=BAR_OPEN, history=0)
    finally:
        cache.forget("ETHBTC", "5m")


def test_frames_match_the_file_as_the_clock_advances_and_are_the_callers_own(market, eth_candles):
    source = ReplaySource(market, start=BAR_OPEN + 1)
    cache = KlineCache(source, LocMemCache("test-kline-frames", {}))

    steps = [0, 0, FIVE_MINUTES, 0, 3 * FIVE_MINUTES, 1, 40 * FIVE_MINUTES, 2000 * FIVE_MINUTES]
    for step in steps:
        source.clock.advance(step)
        now_ms = source.server_time_ms()
        candles = cache.closed_candles("ETHBTC", "5m", now_ms=now_ms, history=300)

        pd.testing.assert_frame_equal(
            candles, file_rows_closed_by(eth_candles, now_ms, 300), check_index_type=True
        )
        candles.loc[:, "close"] = -1.0
        candles.loc[:, "open_time"] = 0
        again = cache.closed_candles("ETHBTC", "5m", now_ms=now_ms, history=300)
        pd.testing.assert_frame_equal(again, file_rows_closed_by(eth_candles, now_ms, 300))


def test_a_fetch_that_brings_nothing_new_leaves_the_shared_entry_alone(market, monkeypatch):
    source = ReplaySource(market, start=BAR_OPEN + 1)
    store = LocMemCache("test-kline-writes", {})
    cache = KlineCache(source, store)
    cache.closed_candles("ETHBTC", "5m", now_ms=source.server_time_ms(), history=10)
    writes = []
    monkeypatch.setattr(store, "set", lambda *args, **kwargs: writes.append(args))

    # A caller ahead of a source that has closed nothing since asks the source again
    ahead = source.server_time_ms() + 3 * FIVE_MINUTES
    candles = cache.closed_candles("ETHBTC", "5m", now_ms=ahead, history=10)

    assert candles["open_time"].iloc[-1] == BAR_OPEN - FIVE_MINUTES
    assert writes == []
