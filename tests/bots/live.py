"""Live (Binance) bots against our stub: the stub replaying ETHBTC's 5m
candles from 2018-01-15, its clock still, python-binance and the market data
pointed at it; and a running bot on a live account there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.test import override_settings

from alerts.evaluation import market
from bots.models import Bot
from conditions.marketdata.stub import BinanceStub, run_stub
from tests.conftest import KLINES_DIR
from tests.factories import DCA_SETTINGS, BotFactory, ExchangeAccountFactory


@contextmanager
def stub_exchange(**settings) -> Iterator[BinanceStub]:
    with run_stub(KLINES_DIR / "ETHBTC-5m.csv", speed=0, start="2018-01-15T00:00:00Z") as running:
        with override_settings(
            BINANCE_API_URL=running.url,
            KLINE_CACHE_PREFIX=f"test-klines-{uuid.uuid4().hex}",
            **settings,
        ):
            market.cache_clear()
            yield running
        market.cache_clear()


def live_bot(**settings) -> Bot:
    """A running ETHBTC bot on a live (stub) Binance account, DCA settings
    with `settings` over them."""
    account = ExchangeAccountFactory(exchange="binance", api_key="k" * 64, api_secret="s" * 64)
    return BotFactory(
        user=account.user,
        account=account,
        symbol="ETHBTC",
        status="running",
        settings={**DCA_SETTINGS, **settings},
    )
