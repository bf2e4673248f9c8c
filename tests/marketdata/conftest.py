from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis

from conditions.engine.candles import load_candles
from conditions.marketdata.replay import ReplayMarket
from conditions.marketdata.stub import BinanceStub, run_stub
from tradeeon.cache import RedisCache

KLINES_DIR = Path(__file__).resolve().parent.parent / "data" / "klines"
ETH_FILE = KLINES_DIR / "ETHBTC-5m.csv"
LTC_FILE = KLINES_DIR / "LTCBTC-5m.csv"
REDIS_URL = "redis://127.0.0.1:6379/15"

FIVE_MINUTES = 5 * 60_000
HOUR = 60 * 60_000
# 2018-01-17 00:00 UTC: a week into the ETHBTC file, on a day boundary.
DAY_START = 1516147200000


@pytest.fixture(scope="session")
def eth_candles() -> pd.DataFrame:
    return load_candles(ETH_FILE)


@pytest.fixture(scope="session")
def market() -> ReplayMarket:
    """ETHBTC and LTCBTC 5m files; shared, the stub never changes it."""
    return ReplayMarket.from_paths([ETH_FILE, LTC_FILE])


@pytest.fixture
def stub(market: ReplayMarket) -> Iterator[BinanceStub]:
    """A frozen stub (speed 0) half-way through the 5m bar opening at DAY_START + 12h."""
    with run_stub(market, speed=0, start=DAY_START + 12 * HOUR + FIVE_MINUTES // 2) as running:
        yield running


@pytest.fixture
def redis_store() -> Iterator[RedisCache]:
    """A Django RedisCache on db 15 under a key prefix of its own, emptied afterwards."""
    prefix = f"test-marketdata-{uuid.uuid4().hex[:12]}"
    store = RedisCache(REDIS_URL, {"KEY_PREFIX": prefix})
    yield store
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()
