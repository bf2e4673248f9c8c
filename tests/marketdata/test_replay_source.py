from __future__ import annotations

import time

import pandas as pd
import pytest

from conditions.engine.candles import CandleFileError
from conditions.marketdata.base import UnknownInterval, UnknownSymbol
from conditions.marketdata.binance import BinanceSource
from conditions.marketdata.replay import Clock, ReplayMarket, ReplaySource
from tests.marketdata.conftest import DAY_START, ETH_FILE, FIVE_MINUTES, HOUR

BAR_OPEN = DAY_START + 12 * HOUR


@pytest.mark.parametrize(
    "moment",
    [
        BAR_OPEN,  # a bar has just opened
        BAR_OPEN + 1,
        BAR_OPEN + 100_000,  # a third of the way through
        BAR_OPEN + FIVE_MINUTES - 1,  # the last millisecond before it closes
        DAY_START + 23 * HOUR + 59 * 60_000,  # late in the day: a long forming 1d bar
    ],
)
def test_the_replay_source_agrees_with_the_stub(stub, market, moment):
    stub.set_time(moment)
    over_http = BinanceSource(stub.url)
    replay = ReplaySource(market, start=moment)

    assert replay.server_time_ms() == over_http.server_time_ms() == moment
    for timeframe in ("5m", "15m", "1h", "4h", "1d", "1w"):
        for symbol in ("ETHBTC", "LTCBTC"):
            pd.testing.assert_frame_equal(
                replay.klines(symbol, timeframe, limit=300),
                over_http.klines(symbol, timeframe, limit=300),
            )
            pd.testing.assert_frame_equal(
                replay.closed_klines(symbol, timeframe, start_ms=DAY_START - HOUR, limit=50),
                over_http.closed_klines(symbol, timeframe, start_ms=DAY_START - HOUR, limit=50),
            )
    assert replay.exchange_info()["symbols"] == over_http.exchange_info()["symbols"]
    assert replay.symbol_filters("ETHBTC") == over_http.symbol_filters("ETHBTC")


def test_the_replay_clock_is_stepped_exactly_or_runs_at_a_speed():
    clock = Clock(1_000, speed=0)
    clock.advance(500)
    assert clock.now_ms() == 1_500
    clock.set(10_000)
    assert clock.now_ms() == 10_000

    clock.set_speed(1000)
    time.sleep(0.1)
    assert 100_000 <= clock.now_ms() - 10_000 <= 1_000_000  # 0.1 s at 1000x, plus scheduling slack


def test_closed_klines_follow_the_replay_clock(market):
    source = ReplaySource(market, start=BAR_OPEN + 1)

    assert source.klines("ETHBTC", "5m", limit=1)["open_time"].tolist() == [BAR_OPEN]
    # Like Binance's, the page of two holds the forming candle, which is dropped.
    assert source.closed_klines("ETHBTC", "5m", limit=2)["open_time"].tolist() == [
        BAR_OPEN - FIVE_MINUTES
    ]
    source.clock.advance(FIVE_MINUTES)
    assert source.closed_klines("ETHBTC", "5m", limit=3)["open_time"].tolist() == [
        BAR_OPEN - FIVE_MINUTES,
        BAR_OPEN,
    ]


def test_after_the_last_candle_nothing_is_forming(eth_candles):
    source = ReplaySource(ETH_FILE, start=int(eth_candles["open_time"].iloc[-1]) + HOUR)

    pd.testing.assert_frame_equal(
        source.klines("ETHBTC", "5m", limit=3), eth_candles.tail(3).reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        source.closed_klines("ETHBTC", "5m", limit=3), source.klines("ETHBTC", "5m", limit=3)
    )


def test_unknown_symbols_and_intervals_are_refused_as_binance_would(market):
    source = ReplaySource(market, start=BAR_OPEN)

    with pytest.raises(UnknownSymbol):
        source.klines("NOPEBTC", "5m")
    with pytest.raises(UnknownInterval):
        source.klines("ETHBTC", "1m")


def test_unusable_candle_files_are_named_in_one_line(tmp_path):
    badly_named = tmp_path / "ethbtc.csv"
    badly_named.write_text(ETH_FILE.read_text())

    with pytest.raises(CandleFileError, match="SYMBOL-TIMEFRAME"):
        ReplayMarket.from_paths(badly_named)
    with pytest.raises(CandleFileError, match="no such file"):
        ReplayMarket.from_paths(tmp_path / "missing-5m.csv")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(CandleFileError, match=r"no \.csv or \.json"):
        ReplayMarket.from_paths(empty_dir)
