"""The live adapter against our Binance stub over real HTTP: orders are found
by their client id whatever happened to the answer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings

from bots.exchanges.base import (
    DuplicateOrder,
    ExchangeRateLimited,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRequest,
)
from bots.exchanges.binance import BinanceExchange
from conditions.marketdata.replay import as_epoch_ms
from conditions.marketdata.stub import run_stub
from tests.conftest import KLINES_DIR

START = "2018-01-15T00:00:00Z"


@pytest.fixture
def stub():
    with run_stub(KLINES_DIR / "ETHBTC-5m.csv", speed=0, start=START) as running:
        yield running


@pytest.fixture
def exchange(stub):
    with override_settings(BINANCE_TIMEOUT_S=0.5):
        yield BinanceExchange("key", "secret", base_url=stub.url)


def market_buy(client_id: str, quote: str = "0.01") -> OrderRequest:
    return OrderRequest("ETHBTC", "buy", "market", client_id, quote_amount=Decimal(quote))


def test_a_market_buy_fills_at_the_replayed_price_with_the_fee_in_base(exchange, stub):
    state = exchange.place_order(market_buy("tdn-1-base"))
    assert state.status == "filled"
    assert state.client_order_id == "tdn-1-base"
    assert state.fee == state.filled_quantity * Decimal("0.001")
    assert state.fee_asset == "ETH"
    assert state.quote_quantity <= Decimal("0.01")
    price = Decimal(
        str(stub.market.klines("ETHBTC", "5m", stub.now_ms(), limit=1)["close"].iloc[-1])
    )
    assert state.average_price == price


def test_a_client_id_is_unique_among_open_orders_only_as_on_binance(exchange, stub):
    # a resting order's id cannot be used again while it is open...
    resting = OrderRequest(
        "ETHBTC", "buy", "limit", "tdn-2-so1", quantity=Decimal("1"), price=Decimal("0.05")
    )
    exchange.place_order(resting)
    with pytest.raises(DuplicateOrder):
        exchange.place_order(resting)
    assert stub.orders.count("tdn-2-so1") == 1
    # ...but a filled order's id can: which is why a market order whose answer
    # was lost is looked up, never simply sent again
    exchange.place_order(market_buy("tdn-2-base"))
    exchange.place_order(market_buy("tdn-2-base"))
    assert stub.orders.count("tdn-2-base") == 2


def test_an_order_whose_answer_was_dropped_exists_and_is_found_by_its_client_id(exchange, stub):
    stub.inject_fault("accept_drop", path="/api/v3/order")
    with pytest.raises(ExchangeUnavailable):
        exchange.place_order(market_buy("tdn-3-base"))
    found = exchange.get_order("ETHBTC", "tdn-3-base")
    assert found.status == "filled" and found.filled_quantity > 0
    assert found.fee > 0, "the fee comes from the account's trades when GET /order has none"


def test_a_hanging_exchange_is_cut_at_the_timeout(exchange, stub):
    stub.inject_fault("hang", path="/api/v3/order", seconds=3)
    with pytest.raises(ExchangeUnavailable):
        exchange.place_order(market_buy("tdn-4-base"))


def test_rate_limits_carry_their_retry_after(exchange, stub):
    stub.inject_fault("429", path="/api/v3/order", retry_after=7)
    with pytest.raises(ExchangeRateLimited) as raised:
        exchange.place_order(market_buy("tdn-5-base"))
    assert raised.value.retry_after_s == 7
    stub.inject_fault("418", path="/api/v3/order", retry_after=120)
    with pytest.raises(ExchangeRateLimited) as banned:
        exchange.place_order(market_buy("tdn-5-base"))
    assert banned.value.retry_after_s == 120
    assert stub.orders.count("tdn-5-base") == 0


def test_a_resting_limit_sell_fills_when_a_later_candle_reaches_it(exchange, stub):
    exchange.place_order(market_buy("tdn-6-base", "0.05"))
    price = Decimal("0.1005")
    state = exchange.place_order(
        OrderRequest("ETHBTC", "sell", "limit", "tdn-6-tp1", quantity=Decimal("0.1"), price=price)
    )
    assert state.status == "open"
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-20T00:00:00Z"), start_ms=stub.now_ms(), limit=1000
    )
    first_touch = int(candles[candles["high"] >= float(price)]["open_time"].iloc[0])
    stub.set_time(first_touch - 1)
    assert exchange.get_order("ETHBTC", "tdn-6-tp1").status == "open"
    stub.set_time(first_touch + 5 * 60_000)  # that candle has closed with its full high
    filled = exchange.get_order("ETHBTC", "tdn-6-tp1")
    assert filled.status == "filled" and filled.average_price == price
    assert filled.fee_asset == "BTC"


def test_cancelling_and_unknown_orders(exchange):
    exchange.place_order(
        OrderRequest(
            "ETHBTC", "buy", "limit", "tdn-7-so1", quantity=Decimal("1"), price=Decimal("0.05")
        )
    )
    assert exchange.cancel_order("ETHBTC", "tdn-7-so1").status == "cancelled"
    with pytest.raises(OrderNotFound):
        exchange.get_order("ETHBTC", "tdn-nope")
    with pytest.raises(OrderNotFound):
        exchange.cancel_order("ETHBTC", "tdn-nope")
