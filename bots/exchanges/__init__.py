"""Exchange adapters, chosen by name: one module per exchange behind base.Exchange."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from bots.models import ExchangeAccount

from .base import Exchange


@lru_cache(maxsize=256)
def _binance(api_key: str, api_secret: str, testnet: bool, live_url: str, testnet_url: str):
    """One adapter (one HTTP session, kept alive) per account's keys in this
    process: a new python-binance client per order costs new connections."""
    from .binance import BinanceExchange

    return BinanceExchange(api_key, api_secret, base_url=testnet_url if testnet else live_url)


def exchange_for(account: ExchangeAccount, *, timeframe: str = "5m") -> Exchange:
    if account.exchange == "paper":
        from alerts.evaluation import market

        from .paper import PaperExchange

        return PaperExchange(account, market(), timeframe=timeframe)
    if account.exchange == "binance":
        return _binance(
            account.api_key,
            account.api_secret,
            account.testnet,
            settings.BINANCE_API_URL,
            settings.BINANCE_TESTNET_API_URL,
        )
    raise ValueError(f"no adapter for exchange {account.exchange!r}")
