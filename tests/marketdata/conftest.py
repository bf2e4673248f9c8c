from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from conditions.engine.candles import load_candles
from conditions.marketdata.replay import ReplayMarket
from conditions.marketdata.stub import BinanceStub, run_stub

KLINES_DIR = Path(__file__).resolve().parent.parent / "data" / "klines"
ETH_FILE = KLINES_DIR / "ETHBTC-5m.csv"
LTC_FILE = KLINES_DIR / "LTCBTC-5m.csv"

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
