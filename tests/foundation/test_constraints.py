"""Integrity lives in the database: these rows are refused by PostgreSQL itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import DataError, IntegrityError, transaction

from alerts.models import AlertTrigger
from bots.models import Deal, Order
from conditions.models import BarEvaluation, ConditionSubscription, ConditionTrigger
from tests.factories import (
    AlertFactory,
    AlertTriggerFactory,
    BotFactory,
    ConditionFactory,
    DealFactory,
    OrderFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db

BAR = datetime(2018, 1, 10, 12, 35, tzinfo=UTC)


def test_it_refuses_a_second_trigger_for_the_same_alert_and_bar():
    first = AlertTriggerFactory(bar_open_time=BAR)
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertTrigger.objects.create(alert=first.alert, bar_open_time=BAR)
    AlertTrigger.objects.create(
        alert=first.alert, bar_open_time=datetime(2018, 1, 10, 12, 40, tzinfo=UTC)
    )
    assert first.alert.triggers.count() == 2


def test_it_refuses_a_duplicate_client_order_id_even_on_another_deal():
    order = OrderFactory(client_order_id="td-1-base")
    other_deal = DealFactory(bot=order.deal.bot)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(
            deal=other_deal, leg="base", side="buy", type="market", client_order_id="td-1-base"
        )


def test_it_refuses_two_orders_for_the_same_deal_leg():
    order = OrderFactory(leg="safety_1", client_order_id="a-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(
            deal=order.deal, leg="safety_1", side="buy", type="market", client_order_id="a-2"
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"client_order_id": "has space"},
        {"client_order_id": "x" * 37},
        {"price": "-1", "type": "limit"},
        {"type": "limit", "price": None},
        {"quantity": "0"},
        {"side": "short"},
        {"status": "lost"},
    ],
    ids=[
        "id-charset",
        "id-length",
        "negative-price",
        "limit-without-price",
        "zero-quantity",
        "bad-side",
        "bad-status",
    ],
)
def test_it_refuses_orders_with_values_out_of_range(fields):
    # Too long for its column is refused as a DataError, a broken rule as an IntegrityError.
    deal = DealFactory()
    values = {
        "deal": deal,
        "leg": "base",
        "side": "buy",
        "type": "market",
        "client_order_id": "ok-1",
        **fields,
    }
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        Order.objects.create(**values)


def test_a_deal_has_a_close_reason_exactly_when_closed():
    bot = BotFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Deal.objects.create(bot=bot, entry_key="e1", state="closed")
    with pytest.raises(IntegrityError), transaction.atomic():
        Deal.objects.create(bot=bot, entry_key="e2", state="open", close_reason="manual")
    Deal.objects.create(bot=bot, entry_key="e3", state="closed", close_reason="take_profit")


def test_two_workers_cannot_open_two_deals_from_the_same_entry():
    deal = DealFactory(entry_key="trigger-42")
    with pytest.raises(IntegrityError), transaction.atomic():
        Deal.objects.create(bot=deal.bot, entry_key="trigger-42")


def test_only_one_active_subscription_per_bot_and_condition():
    subscription = SubscriptionFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ConditionSubscription.objects.create(
            user=subscription.user,
            bot=subscription.bot,
            condition=subscription.condition,
            bot_type="dca",
        )
    subscription.active = False
    subscription.save()
    ConditionSubscription.objects.create(
        user=subscription.user,
        bot=subscription.bot,
        condition=subscription.condition,
        bot_type="dca",
    )


def test_a_condition_triggers_once_per_candle_and_a_pair_is_evaluated_once_per_candle():
    condition = ConditionFactory()
    ConditionTrigger.objects.create(
        condition=condition, symbol="ETHBTC", timeframe="5m", candle_time=BAR
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        ConditionTrigger.objects.create(
            condition=condition, symbol="ETHBTC", timeframe="5m", candle_time=BAR
        )
    BarEvaluation.objects.create(
        symbol="ETHBTC",
        timeframe="5m",
        candle_time=BAR,
        indicator_values={condition.pk: {"left": 1}},
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        BarEvaluation.objects.create(
            symbol="ETHBTC", timeframe="5m", candle_time=BAR, indicator_values={}
        )
    # Another pair of the symbol has a row of its own at that open time.
    BarEvaluation.objects.create(
        symbol="ETHBTC", timeframe="15m", candle_time=BAR, indicator_values={}
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"symbol": "eth/btc"},
        {"status": "deleted"},
        {"fire_mode": "sometimes"},
        {"base_timeframe": "7m"},
    ],
    ids=["symbol", "status", "fire-mode", "timeframe"],
)
def test_it_refuses_alerts_with_unknown_values(fields):
    alert = AlertFactory.build(**fields)
    alert.user.save()
    alert.user_id = alert.user.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        alert.save()


@pytest.mark.parametrize(
    "condition_id",
    ["not-a-hash", "a" * 63, "A" * 64, "g" + "a" * 63, "a" * 63 + "\n", ""],
    ids=["text", "63-chars", "upper-case", "not-hex", "newline", "empty"],
)
def test_it_refuses_a_condition_whose_id_is_not_a_sha256(condition_id):
    with pytest.raises(IntegrityError), transaction.atomic():
        ConditionFactory(condition_id=condition_id)


@pytest.mark.parametrize("symbol", ["B", "btcusdt", "BTC/USDT", "BTC USDT", "BTCUSDT\n", ""])
def test_a_condition_or_alert_symbol_is_2_to_20_capitals_and_digits_on_update_too(symbol):
    # Checked whatever an update changes (counters), so checked cheaply.
    condition = ConditionFactory(condition_id="0123456789abcdef" * 4, symbol="BTCUSDT")
    alert = AlertFactory(symbol="A1" * 10)
    with pytest.raises(IntegrityError), transaction.atomic():
        type(condition).objects.filter(pk=condition.pk).update(symbol=symbol)
    with pytest.raises(IntegrityError), transaction.atomic():
        type(alert).objects.filter(pk=alert.pk).update(symbol=symbol)


def test_deleting_a_condition_in_use_is_refused():
    subscription = SubscriptionFactory()
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        subscription.condition.delete()
