"""A DCA deal from entry to take profit on the paper exchange, with market
data from our Binance stub: every state change, order and balance exact."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings

from alerts.evaluation import market
from bots import deals, orders
from bots.dca import safety_ladder, validate_settings
from bots.models import Deal, Order
from conditions.marketdata.replay import as_epoch_ms
from conditions.marketdata.stub import run_stub
from conditions.models import ConditionSubscription
from tests.conftest import KLINES_DIR
from tests.factories import DCA_SETTINGS, BotFactory, ExchangeAccountFactory

START = "2018-01-15T00:00:00Z"
STORED = Decimal("1e-18")  # money columns keep 18 decimal places


def stored(value: Decimal) -> Decimal:
    return value.quantize(STORED)


SETTINGS = {
    **DCA_SETTINGS,
    "max_safety_orders": 3,
    "step_scale": 1.5,
    "volume_scale": 1.2,
    "cooldown": 600,
}


@pytest.fixture
def stub():
    with run_stub(KLINES_DIR / "ETHBTC-5m.csv", speed=0, start=START) as running:
        with override_settings(
            BINANCE_API_URL=running.url, KLINE_CACHE_PREFIX=f"test-klines-{uuid.uuid4().hex}"
        ):
            market.cache_clear()
            yield running
        market.cache_clear()


def make_bot(**overrides):
    account = ExchangeAccountFactory(exchange="paper", paper_balances={"BTC": "1", "USDT": "10000"})
    return BotFactory(
        user=account.user,
        account=account,
        symbol="ETHBTC",
        base_timeframe="5m",
        status="running",
        settings={**SETTINGS, **overrides},
    )


def place_all(deal: Deal) -> None:
    """What the place_order tasks would do, in this process."""
    for order in deal.orders.filter(status=Order.Status.NEW).order_by("pk"):
        orders.place_order(order.pk)


@pytest.mark.django_db
def test_a_deal_buys_at_market_rests_a_take_profit_and_closes_in_profit(
    stub, django_capture_on_commit_callbacks
):
    # given a running bot and an entry at the stub's clock
    bot = make_bot()
    now = stub.now_ms()
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", now, "test entry")
    assert deal.state == "opening"
    base = deal.orders.get()
    assert (base.leg, base.side, base.type, base.quote_amount) == (
        "base",
        "buy",
        "market",
        Decimal("0.01"),
    )
    assert base.client_order_id == f"tdn-{deal.pk}-base"

    # when the base order is placed
    with django_capture_on_commit_callbacks(execute=False):
        place_all(deal)
    deal.refresh_from_db()
    base.refresh_from_db()
    price = Decimal(str(stub.market.klines("ETHBTC", "5m", now, limit=1)["close"].iloc[-1]))

    # then the deal is open at the replayed price, fees taken in base
    assert deal.state == "open" and base.status == "filled"
    assert base.average_fill_price == price
    assert deal.quote_spent == base.filled_quote
    assert deal.base_bought == base.filled_quantity - base.fee
    assert deal.average_entry_price == stored(deal.quote_spent / deal.base_bought)
    assert deal.take_profit_price == stored(deal.average_entry_price * Decimal("1.01"))
    # one registry price condition per safety level, subscribed by the bot
    levels = safety_ladder(
        validate_settings(bot.settings, symbol="ETHBTC", base_timeframe="5m"), price
    )
    subscriptions = ConditionSubscription.objects.filter(
        bot=bot, active=True, bot_config__role="safety"
    )
    assert sorted(s.condition.indicator_config["right"]["value"] for s in subscriptions) == sorted(
        float(level.price) for level in levels
    )
    tp = deal.orders.get(leg="tp1")
    assert (tp.side, tp.type, tp.price, tp.quantity) == (
        "sell",
        "limit",
        deal.take_profit_price,
        deal.base_bought,
    )

    # when the first safety level fires, it buys at market
    with django_capture_on_commit_callbacks(execute=False):
        place_all(deal)  # the resting tp1
        deals.on_safety_trigger(deal.pk, 1)
        place_all(deal)
    deal.refresh_from_db()
    assert deal.safety_orders_filled == 1
    assert deal.orders.get(leg="so1").quote_amount == levels[0].quote
    # and the take profit is re-priced once the resting one is off the exchange
    assert not deal.orders.filter(leg="tp2").exists()
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(deal.orders.get(leg="tp1").pk)
    assert deal.orders.get(leg="tp1").status == "cancelled"
    tp2 = deal.orders.get(leg="tp2")
    assert tp2.price == stored(deal.average_entry_price * Decimal("1.01"))
    assert tp2.quantity == deal.base_bought
    with django_capture_on_commit_callbacks(execute=False):
        place_all(deal)

    # when the market later reaches the take profit, reconciliation sees it filled
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-25T00:00:00Z"), start_ms=now + 300_000, limit=1000
    )
    touch = int(candles[candles["high"] >= float(tp2.price)]["open_time"].iloc[0])
    stub.set_time(touch + 300_000)
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    deal.refresh_from_db()

    # then the deal closed in profit, with its P&L and history
    assert deal.state == "closed" and deal.close_reason == "take_profit"
    tp2.refresh_from_db()
    assert deal.quote_received == tp2.filled_quote - tp2.fee
    assert deal.realized_pnl_quote == deal.quote_received - deal.quote_spent > 0
    assert [e.to_state for e in deal.events.exclude(cause__in=["fill", "safety_filled"])] == [
        "opening",
        "open",
        "closed",
    ]
    assert not ConditionSubscription.objects.filter(
        bot=bot, active=True, bot_config__deal_id=deal.pk
    ).exists()
    balances = {
        k: Decimal(v)
        for k, v in type(bot.account).objects.get(pk=bot.account_id).paper_balances.items()
    }
    assert balances["BTC"] == Decimal(1) + deal.realized_pnl_quote
    # the sell was rounded down to the lot step: only sub-lot dust stays behind
    step = orders.exchange_for(bot.account).symbol_filters("ETHBTC").step_size
    assert balances["ETH"] == deal.base_bought - tp2.filled_quantity
    assert 0 <= balances["ETH"] < step


@pytest.mark.django_db
def test_an_order_the_balance_cannot_cover_is_rejected_and_the_deal_fails(
    stub, django_capture_on_commit_callbacks
):
    bot = make_bot(base_order_size="5")
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test entry")
        place_all(deal)
    deal.refresh_from_db()
    base = deal.orders.get()
    assert base.status == "rejected" and "insufficient BTC balance" in base.error
    assert (deal.state, deal.close_reason) == ("closed", "failed")


@pytest.mark.django_db
def test_max_active_deals_and_cooldown_hold_back_new_entries(
    stub, django_capture_on_commit_callbacks
):
    bot = make_bot()
    now = stub.now_ms()
    with django_capture_on_commit_callbacks(execute=False):
        first = deals.open_deal(bot.pk, "entry-1", now, "entry")
        assert deals.open_deal(bot.pk, "entry-2", now, "entry") is None  # one deal at a time
        assert deals.open_deal(bot.pk, "entry-1", now, "entry") == first  # the same trigger again
    Deal.objects.filter(pk=first.pk).update(
        state="closed", close_reason="manual", closed_at=deals.exchange_time(now)
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert deals.open_deal(bot.pk, "entry-3", now + 599_000, "entry") is None  # cooldown 600 s
        assert deals.open_deal(bot.pk, "entry-4", now + 600_000, "entry") is not None


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_the_same_trigger_open_one_deal(stub):
    bot = make_bot(max_active_deals=5)
    results, barrier = [], threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(deals.open_deal(bot.pk, "entry-race", stub.now_ms(), "race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Deal.objects.filter(bot=bot).count() == 1
    assert Order.objects.filter(deal__bot=bot).count() == 1
    assert len({deal.pk for deal in results if deal}) == 1


@pytest.mark.django_db
def test_an_asap_bot_enters_again_only_once_its_cooldown_has_passed(
    stub, django_capture_on_commit_callbacks
):
    from bots.services import enter_asap_bots

    bot = make_bot()
    now = stub.now_ms()
    with django_capture_on_commit_callbacks(execute=False):
        assert enter_asap_bots(now) == 1
        assert enter_asap_bots(now) == 0  # the deal is still open
    first = Deal.objects.get(bot=bot)
    Deal.objects.filter(pk=first.pk).update(
        state="closed", close_reason="manual", closed_at=deals.exchange_time(now)
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert enter_asap_bots(now + 300_000) == 0  # 600 s cooldown
        assert enter_asap_bots(now + 600_000) == 1
    assert Deal.objects.filter(bot=bot).count() == 2


@pytest.mark.django_db
def test_a_stop_loss_trigger_sells_everything_at_market_and_closes_the_deal(
    stub, django_capture_on_commit_callbacks
):
    bot = make_bot(stop_loss=2.0)
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "entry")
        place_all(deal)
    deal.refresh_from_db()
    stop = ConditionSubscription.objects.get(bot=bot, active=True, bot_config__role="stop_loss")
    assert stop.condition.indicator_config["op"] == "lte"
    # condition values are JSON floats: the level is the stop price to float precision
    assert stop.condition.indicator_config["right"]["value"] == float(deal.stop_loss_price)
    assert deal.stop_loss_price == stored(deal.average_entry_price * Decimal("0.98"))

    # when the stop loss fires, the resting take profit is cancelled first
    with django_capture_on_commit_callbacks(execute=False):
        closing = deals.close_deal(deal.pk, "stop_loss", "stop_loss")
    assert closing.state == "closing"
    assert not deal.orders.filter(side="sell", type="market").exists()
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(deal.orders.get(leg="tp1").pk)
        # then everything held is sold at market
        place_all(deal)
    deal.refresh_from_db()
    assert deal.orders.get(leg="tp1").status == "cancelled"
    sell = deal.orders.get(leg="sl")
    assert (sell.side, sell.type, sell.status) == ("sell", "market", "filled")
    assert sell.quantity == deal.base_bought
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")
    assert deal.realized_pnl_quote == deal.quote_received - deal.quote_spent
    assert not ConditionSubscription.objects.filter(
        bot=bot, active=True, bot_config__deal_id=deal.pk
    ).exists()


@pytest.mark.django_db
def test_a_trailing_take_profit_follows_the_high_and_exits_on_the_pullback(
    stub, django_capture_on_commit_callbacks
):
    from bots.services import trail_open_deals

    # given an open deal with a 1% take profit trailing by 0.5%, and no resting sell
    bot = make_bot(trailing_deviation=0.5)
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "entry")
        place_all(deal)
    deal.refresh_from_db()
    assert not deal.orders.filter(leg__startswith="tp").exists()
    tp = deal.take_profit_price
    bar = stub.now_ms() + 300_000

    def trail(high, close, offset):
        with django_capture_on_commit_callbacks(execute=False):
            return trail_open_deals(
                "ETHBTC", "5m", [(bar + offset * 300_000, str(high), str(close))]
            )

    # a high short of the take profit starts nothing
    assert trail(tp * Decimal("0.999"), tp * Decimal("0.99"), 0) == 0
    assert Deal.objects.get(pk=deal.pk).trailing_high is None
    # when a high reaches it, the trail starts there and follows higher highs
    assert trail(tp * Decimal("1.002"), tp, 1) == 0
    assert trail(tp * Decimal("1.010"), tp * Decimal("1.008"), 2) == 0
    high = Deal.objects.get(pk=deal.pk).trailing_high
    assert high == stored(tp * Decimal("1.010"))
    # a close just above high * (1 - 0.5%) holds; at or below it exits at market
    assert trail(tp, high * Decimal("0.9951"), 3) == 0
    assert trail(tp, high * Decimal("0.995"), 4) == 1
    exit_order = Deal.objects.get(pk=deal.pk).orders.get(leg="tptrail")
    assert (exit_order.side, exit_order.type) == ("sell", "market")
    with django_capture_on_commit_callbacks(execute=False):
        place_all(deal)
    deal.refresh_from_db()
    assert (deal.state, deal.close_reason) == ("closed", "take_profit")
