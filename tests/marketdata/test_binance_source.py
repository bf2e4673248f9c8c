from __future__ import annotations

import time
from decimal import Decimal

import pandas as pd
import pytest

from conditions.marketdata.base import (
    ForeignHostRefused,
    MarketDataUnavailable,
    RateLimited,
    UnknownSymbol,
)
from conditions.marketdata.binance import BinanceSource, CacheBackoff
from tests.marketdata.conftest import DAY_START, FIVE_MINUTES, HOUR

BAR_OPEN = DAY_START + 12 * HOUR  # the bar the stub fixture's clock is half-way through


def fast_source(stub, **options) -> BinanceSource:
    """A source with short backoffs, so failing paths stay quick to test."""
    settings = {"timeout_s": 2.0, "retry_base_s": 0.05, "retry_max_s": 0.2, **options}
    return BinanceSource(stub.url, **settings)


def test_it_talks_only_to_its_base_url(stub):
    source = BinanceSource(stub.url)
    client = source.client()
    assert stub.request_count() == 0  # python-binance's constructor ping is off

    assert source.server_time_ms() == stub.now_ms()
    assert [record.path for record in stub.request_log()] == ["/api/v3/time"]
    # Endpoints python-binance sends elsewhere (website, futures) never leave.
    with pytest.raises(ForeignHostRefused):
        client.get_products()
    with pytest.raises(ForeignHostRefused):
        client.futures_ping()


def test_it_uses_the_configured_binance_url_and_timeout_by_default(settings, stub):
    settings.BINANCE_API_URL = stub.url
    settings.BINANCE_TIMEOUT_S = 3.5

    source = BinanceSource()

    assert (source.base_url, source.timeout_s) == (stub.url, 3.5)
    assert source.server_time_ms() == stub.now_ms()


def test_klines_are_candle_frames_with_the_forming_candle_last(stub, eth_candles):
    candles = fast_source(stub).klines("ethbtc", "5m", limit=10)

    assert list(candles.columns) == ["open_time", "open", "high", "low", "close", "volume"]
    assert candles["open_time"].dtype == "int64"
    assert candles["open_time"].iloc[-1] == BAR_OPEN
    expected = eth_candles[eth_candles["open_time"] < BAR_OPEN].tail(9).reset_index(drop=True)
    pd.testing.assert_frame_equal(candles.head(9), expected)


def test_closed_klines_follow_the_server_clock_not_the_local_one(stub):
    source = fast_source(stub)
    # The stub lives in January 2018; by the local clock every candle has long closed.
    assert time.time() * 1000 - stub.now_ms() > 365 * 24 * HOUR

    closed = source.closed_klines("ETHBTC", "5m", limit=5)
    assert closed["open_time"].iloc[-1] == BAR_OPEN - FIVE_MINUTES
    assert closed.attrs["server_time_ms"] == stub.now_ms()

    stub.set_time(BAR_OPEN + FIVE_MINUTES)  # the exact moment the bar closes
    assert source.closed_klines("ETHBTC", "5m", limit=5)["open_time"].iloc[-1] == BAR_OPEN
    stub.set_time(BAR_OPEN + FIVE_MINUTES - 1)
    assert (
        source.closed_klines("ETHBTC", "5m", limit=5)["open_time"].iloc[-1]
        == BAR_OPEN - FIVE_MINUTES
    )


def test_429_raises_rate_limited_with_its_retry_after_and_later_callers_wait(stub):
    stub.inject_fault("429", retry_after=1)

    with pytest.raises(RateLimited) as raised:
        fast_source(stub).server_time_ms()
    assert (raised.value.retry_after_s, raised.value.status) == (1.0, 429)

    # Another source in this process waits the backoff out instead of hammering.
    started = time.monotonic()
    assert fast_source(stub).server_time_ms() == stub.now_ms()
    assert time.monotonic() - started >= 0.9
    log = stub.request_log()
    assert [record.status for record in log] == [429, 200]


def test_418_is_honoured_and_a_long_ban_fails_fast_without_asking_again(stub):
    stub.inject_fault("418", retry_after=3)
    source = fast_source(stub, max_wait_s=1.0)

    with pytest.raises(RateLimited) as banned:
        source.klines("ETHBTC", "5m", limit=1)
    assert (banned.value.retry_after_s, banned.value.status) == (3.0, 418)

    started = time.monotonic()
    with pytest.raises(RateLimited) as still_banned:
        source.klines("ETHBTC", "5m", limit=1)
    assert time.monotonic() - started < 0.5
    assert 2.0 < still_banned.value.retry_after_s <= 3.0
    assert stub.request_count() == 1


def test_the_backoff_is_published_to_the_shared_cache_for_other_workers(stub, redis_store):
    stub.inject_fault("429", retry_after=30)

    with pytest.raises(RateLimited):
        fast_source(stub, backoff_cache=redis_store).server_time_ms()

    # What another worker process reads from the same Redis.
    until = CacheBackoff(redis_store).until(f"127.0.0.1:{stub.port}")
    assert 28 < until - time.time() <= 30


def test_5xx_answers_and_dropped_connections_are_retried_until_an_answer(stub, eth_candles):
    stub.inject_fault("500", count=2, path="/api/v3/klines")
    stub.inject_fault("drop", path="/api/v3/klines")

    candles = fast_source(stub).klines("ETHBTC", "5m", limit=3)

    assert candles["open_time"].iloc[-1] == BAR_OPEN
    assert [record.fault for record in stub.request_log()] == ["500", "500", "drop", None]


def test_retries_are_bounded(stub):
    stub.inject_fault("500", count=10)

    with pytest.raises(MarketDataUnavailable, match="failed 3 times"):
        fast_source(stub, max_attempts=3).server_time_ms()
    assert stub.request_count() == 3


def test_a_hanging_request_times_out_within_the_timeout_and_is_retried(stub):
    stub.inject_fault("hang")  # longer than any client timeout
    source = fast_source(stub, timeout_s=0.4)

    started = time.monotonic()
    server_time = source.server_time_ms()
    elapsed = time.monotonic() - started

    assert server_time == stub.now_ms()
    assert 0.4 <= elapsed < 1.5
    assert [record.fault for record in stub.request_log()] == ["hang", None]


def test_requests_slow_down_as_the_used_weight_nears_the_limit(stub):
    stub.set_time(BAR_OPEN)  # frozen at a minute's start: the weight only grows
    source = fast_source(stub, weight_limit=20, weight_soft_ratio=0.5, throttle_max_s=0.3)

    durations = []
    for _ in range(16):
        started = time.monotonic()
        source.server_time_ms()
        durations.append(time.monotonic() - started)

    assert stub.used_weight == 16
    assert sum(durations[:10]) < 0.5  # below half the limit: no pauses at all
    # From half the limit on, each request first pauses longer, up to 0.3 s at the limit.
    for used, duration in enumerate(durations[10:], start=10):
        assert duration >= 0.3 * (used - 9) / 11
    assert source.throttle_delay_s() == pytest.approx(0.3 * 7 / 11)


def test_a_rejected_request_raises_at_once_without_retrying(stub):
    with pytest.raises(UnknownSymbol, match="NOPEBTC"):
        fast_source(stub).klines("NOPEBTC", "5m")
    assert stub.request_count() == 1


def test_symbol_filters_come_from_exchange_info(stub):
    source = fast_source(stub)

    filters = source.symbol_filters("LTCBTC")
    source.symbol_filters("ETHBTC")

    assert (filters.base_asset, filters.quote_asset, filters.trading) == ("LTC", "BTC", True)
    assert filters.round_price(Decimal("0.0171234567")) == Decimal("0.01712300")
    assert filters.round_quantity(Decimal("1.23456")) == Decimal("1.2345")
    assert filters.min_notional == Decimal("0.0001")
    assert stub.request_count("/api/v3/exchangeInfo") == 1  # kept, it weighs 20
    with pytest.raises(UnknownSymbol):
        source.symbol_filters("NOPEBTC")
