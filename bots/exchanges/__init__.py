"""Exchange adapters, chosen by name: one module per exchange behind base.Exchange."""

from __future__ import annotations

from bots.models import ExchangeAccount

from .base import Exchange


def exchange_for(account: ExchangeAccount, *, timeframe: str = "5m") -> Exchange:
    if account.exchange == "paper":
        from alerts.evaluation import market

        from .paper import PaperExchange

        return PaperExchange(account, market(), timeframe=timeframe)
    if account.exchange == "binance":
        from .binance import BinanceExchange

        return BinanceExchange(account.api_key, account.api_secret, testnet=account.testnet)
    raise ValueError(f"no adapter for exchange {account.exchange!r}")
