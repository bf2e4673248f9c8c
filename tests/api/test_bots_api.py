"""Bots with the DCA settings table, deals, orders and exchange accounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from bots.models import Bot, Deal, ExchangeAccount, Order
from conditions.models import ConditionSubscription
from tests.api.error_shape import errors_of
from tests.factories import BotFactory, DealFactory, ExchangeAccountFactory, OrderFactory

pytestmark = pytest.mark.django_db

DCA = {
    "name": "ETH dips",
    "kind": "dca",
    "symbol": "ETHBTC",
    "base_timeframe": "15m",
    "entry": {"conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}]},
    "base_order_size": "100",
    "safety_order_size": "50",
    "max_safety_orders": 5,
    "active_safety_orders": 2,
    "price_deviation": "1.0",
    "step_scale": "1.5",
    "volume_scale": "1.2",
    "take_profit": "2.0",
    "take_profit_type": "average",
    "trailing_deviation": "0.5",
    "stop_loss": "10",
    "cooldown": 300,
    "max_active_deals": 1,
    "safety_mode": "triggered",
}


def create(client, body: dict):
    return client.post("/api/bots/", body, format="json")


def test_a_dca_bot_is_created_on_the_users_paper_account_made_on_first_use(client, user):
    first = create(client, DCA)
    second = create(client, {**DCA, "name": "another"})

    assert (first.status_code, second.status_code) == (201, 201)
    bot = first.json()
    account = ExchangeAccount.objects.get(user=user)
    assert account.exchange == "paper"
    assert bot["account"] == second.json()["account"] == account.pk
    assert bot["status"] == "stopped"
    assert (bot["base_order_size"], bot["step_scale"], bot["take_profit"]) == ("100", "1.5", "2")
    stored = Bot.objects.get(pk=bot["id"]).settings
    assert stored["base_order_size"] == "100"
    assert stored["max_safety_orders"] == 5
    assert stored["entry"] == DCA["entry"]


def test_unset_settings_take_their_defaults(client):
    minimal = {
        "name": "asap",
        "symbol": "ETHBTC",
        "base_timeframe": "5m",
        "base_order_size": "10",
        "take_profit": "1.5",
    }

    bot = create(client, minimal).json()

    assert bot["entry"] == {"mode": "asap"}
    assert (bot["max_safety_orders"], bot["safety_mode"], bot["take_profit_type"]) == (
        0,
        "triggered",
        "average",
    )
    assert bot["stop_loss"] is None


@pytest.mark.parametrize("kind", ["grid", "trend"])
def test_grid_and_trend_bots_are_not_supported_yet(client, kind):
    response = create(client, {**DCA, "kind": kind})

    assert response.status_code == 400
    assert "not supported yet" in errors_of(response)["kind"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_order_size": "0"}, "base_order_size"),
        ({"base_order_size": "lots"}, "base_order_size"),
        ({"safety_order_size": None}, "safety_order_size"),
        ({"active_safety_orders": 6}, "active_safety_orders"),
        ({"max_safety_orders": 20, "step_scale": "2"}, "max_safety_orders"),
        ({"price_deviation": "100"}, "price_deviation"),
        ({"trailing_deviation": "2.0"}, "trailing_deviation"),
        ({"take_profit_type": "median"}, "take_profit_type"),
        ({"safety_mode": "eager"}, "safety_mode"),
        ({"cooldown": -1}, "cooldown"),
        ({"max_active_deals": 0}, "max_active_deals"),
        ({"symbol": "ETH BTC"}, "symbol"),
        ({"base_timeframe": "45m"}, "base_timeframe"),
        (
            {"entry": {"conditions": [{"indicator": "RSX", "operator": "<"}]}},
            "entry.conditions.0.indicator",
        ),
        ({"entry": {"mode": "asap", "delay": 5}}, "entry.delay"),
        ({"take_profit": None}, "take_profit"),
    ],
)
def test_a_bot_outside_the_settings_table_answers_400_naming_the_field(client, change, field):
    response = create(client, {**DCA, **change})

    assert response.status_code == 400
    assert field in errors_of(response)
    assert not Bot.objects.exists()


def test_a_bot_on_another_users_account_answers_404(client, intruder):
    foreign = ExchangeAccountFactory(user=intruder)

    response = create(client, {**DCA, "account": foreign.pk})

    assert response.status_code == 404
    assert "account" in errors_of(response)
    assert not Bot.objects.exists()


def test_a_bot_on_an_own_account(client, user):
    account = ExchangeAccountFactory(user=user, name="second paper")

    assert create(client, {**DCA, "account": account.pk}).json()["account"] == account.pk


def test_patching_one_setting_keeps_the_others(client):
    bot = create(client, DCA).json()

    response = client.patch(f"/api/bots/{bot['id']}/", {"take_profit": "3.5"}, format="json")

    assert response.status_code == 200
    assert response.json()["take_profit"] == "3.5"
    assert response.json()["safety_order_size"] == "50"


def test_patching_is_checked_against_the_stored_settings(client):
    bot = create(client, DCA).json()

    response = client.patch(f"/api/bots/{bot['id']}/", {"take_profit": "0.4"}, format="json")

    assert response.status_code == 400
    assert "trailing_deviation" in errors_of(response)


def test_starting_subscribes_the_entry_and_pausing_ends_it(client):
    bot = create(client, DCA).json()

    started = client.post(f"/api/bots/{bot['id']}/start")
    subscribed = ConditionSubscription.objects.filter(bot_id=bot["id"], active=True).count()
    paused = client.post(f"/api/bots/{bot['id']}/pause")

    assert (started.status_code, started.json()["status"]) == (200, "running")
    assert subscribed == 1
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    assert not ConditionSubscription.objects.filter(bot_id=bot["id"], active=True).exists()


def test_a_bot_with_a_deal_still_open_is_not_deleted(client, user):
    bot = BotFactory(user=user)
    DealFactory(bot=bot, state="open")

    response = client.delete(f"/api/bots/{bot.pk}/")

    assert response.status_code == 409
    assert Bot.objects.filter(pk=bot.pk).exists()


def test_a_bot_whose_deals_are_closed_is_deleted(client, user):
    bot = BotFactory(user=user)
    DealFactory(bot=bot, state="closed", close_reason="take_profit")

    assert client.delete(f"/api/bots/{bot.pk}/").status_code == 204
    assert not Bot.objects.filter(pk=bot.pk).exists()


def test_deals_are_listed_with_filters(client, user, intruder):
    eth_bot = BotFactory(user=user, symbol="ETHBTC")
    ltc_bot = BotFactory(user=user, symbol="LTCBTC")
    open_eth = DealFactory(bot=eth_bot, state="open")
    DealFactory(bot=eth_bot, state="closed", close_reason="manual")
    open_ltc = DealFactory(bot=ltc_bot, state="open")
    DealFactory(bot=BotFactory(user=intruder), state="open")

    def ids(query: str) -> list[int]:
        return [deal["id"] for deal in client.get(f"/api/deals/{query}").json()["results"]]

    assert sorted(ids("")) == sorted(
        [
            open_eth.pk,
            open_ltc.pk,
            *Deal.objects.filter(bot=eth_bot, state="closed").values_list("pk", flat=True),
        ]
    )
    assert ids(f"?bot={eth_bot.pk}&state=open") == [open_eth.pk]
    assert ids("?symbol=LTCBTC") == [open_ltc.pk]


def test_a_deal_shows_its_orders_and_events(client, user):
    deal = DealFactory(bot=BotFactory(user=user), state="open")
    OrderFactory(deal=deal, leg="base", status="filled")

    detail = client.get(f"/api/deals/{deal.pk}/").json()

    assert [order["leg"] for order in detail["orders"]] == ["base"]
    assert detail["events"] == []


def test_closing_an_open_deal_by_hand_sells_what_it_holds(client, user):
    deal = DealFactory(
        bot=BotFactory(user=user),
        state="open",
        base_bought=Decimal("0.5"),
        quote_spent=Decimal("100"),
        base_fill_price=Decimal("200"),
        average_entry_price=Decimal("200"),
    )

    response = client.post(f"/api/deals/{deal.pk}/close")

    assert response.status_code == 200
    assert response.json()["state"] == "closing"
    sell = Order.objects.get(deal=deal, side="sell")
    assert sell.type == "market"


@pytest.mark.parametrize("state", ["waiting_entry", "closing"])
def test_only_an_open_deal_can_be_closed_by_hand(client, user, state):
    deal = DealFactory(bot=BotFactory(user=user), state=state)

    response = client.post(f"/api/deals/{deal.pk}/close")

    assert response.status_code == 409
    deal.refresh_from_db()
    assert deal.state == state


def test_orders_are_listed_with_filters(client, user):
    deal = DealFactory(bot=BotFactory(user=user))
    filled = OrderFactory(deal=deal, leg="base", status="filled")
    OrderFactory(deal=deal, leg="so1", status="new")

    response = client.get(f"/api/orders/?status=filled&bot={deal.bot_id}&side=buy")

    assert [order["id"] for order in response.json()["results"]] == [filled.pk]
    assert response.json()["results"][0]["symbol"] == "ETHBTC"


def test_a_malformed_order_filter_answers_400(client):
    response = client.get("/api/orders/?status=lost")

    assert response.status_code == 400
    assert "status" in errors_of(response)


def test_exchange_account_keys_are_write_only_and_stored_encrypted(client, user):
    response = client.post(
        "/api/exchange-accounts/",
        {"name": "main", "exchange": "binance", "api_key": "KEY-123", "api_secret": "SECRET-456"},
        format="json",
    )

    assert response.status_code == 201
    shown = response.json()
    assert "api_key" not in shown and "api_secret" not in shown
    assert shown["has_api_key"] is True
    assert "KEY-123" not in client.get("/api/exchange-accounts/").content.decode()
    account = ExchangeAccount.objects.get(pk=shown["id"])
    assert account.api_secret == "SECRET-456"
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_secret FROM bots_exchangeaccount WHERE id = %s", [account.pk])
        (stored,) = cursor.fetchone()
    assert "SECRET-456" not in stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "live", "exchange": "binance"}, "api_key"),
        ({"name": "live", "exchange": "binance", "api_key": "k"}, "api_secret"),
        ({"name": "sim", "exchange": "paper", "api_key": "k", "api_secret": "s"}, "api_key"),
        ({"name": "x", "exchange": "kraken"}, "exchange"),
    ],
)
def test_a_malformed_exchange_account_answers_400(client, body, field):
    response = client.post("/api/exchange-accounts/", body, format="json")

    assert response.status_code == 400
    assert field in errors_of(response)


def test_account_names_are_unique_per_user(client, user):
    ExchangeAccountFactory(user=user, name="main")

    response = client.post("/api/exchange-accounts/", {"name": "main"}, format="json")

    assert response.status_code == 400
    assert "name" in errors_of(response)


def test_an_account_bots_trade_on_is_not_deleted(client, user):
    bot = BotFactory(user=user)

    response = client.delete(f"/api/exchange-accounts/{bot.account_id}/")

    assert response.status_code == 409
    assert ExchangeAccount.objects.filter(pk=bot.account_id).exists()


def test_bots_are_listed_read_and_replaced(client):
    created = create(client, DCA).json()
    create(client, {**DCA, "name": "on LTC", "symbol": "LTCBTC", "entry": {"mode": "asap"}})

    listed = client.get("/api/bots/?symbol=ETHBTC").json()
    read = client.get(f"/api/bots/{created['id']}/").json()
    replaced = client.put(
        f"/api/bots/{created['id']}/",
        {**DCA, "name": "renamed", "max_safety_orders": 2},
        format="json",
    ).json()

    assert [bot["id"] for bot in listed["results"]] == [created["id"]]
    assert read == created
    assert (replaced["name"], replaced["max_safety_orders"]) == ("renamed", 2)


def test_an_order_is_read_with_its_deal_and_bot(client, user):
    order = OrderFactory(deal=DealFactory(bot=BotFactory(user=user)))

    read = client.get(f"/api/orders/{order.pk}/").json()

    assert (read["deal_id"], read["bot_id"], read["client_order_id"]) == (
        order.deal_id,
        order.deal.bot_id,
        order.client_order_id,
    )


def test_an_exchange_account_is_renamed_its_keys_replaced_and_deleted(client, user):
    account = client.post(
        "/api/exchange-accounts/",
        {"name": "live", "exchange": "binance", "testnet": True, "api_key": "a", "api_secret": "b"},
        format="json",
    ).json()

    renamed = client.patch(
        f"/api/exchange-accounts/{account['id']}/",
        {"name": "live 2", "api_key": "c", "api_secret": "d"},
        format="json",
    )
    deleted = client.delete(f"/api/exchange-accounts/{account['id']}/")

    assert renamed.json()["name"] == "live 2"
    assert ExchangeAccount.objects.filter(user=user).count() == 0
    assert deleted.status_code == 204


def test_creating_bots_registers_their_entry_once_and_subscribes_each(client, user):
    # given two bots (of two users) entering on the same condition, written differently
    create(client, DCA)
    other = BotFactory(symbol="ETHBTC", base_timeframe="15m")
    client.force_authenticate(other.user)
    spelled_otherwise = {
        "conditions": [{"indicator": "rsi", "operator": "below", "value": 30.0, "period": 14}]
    }
    create(client, {**DCA, "entry": spelled_otherwise})
    # then the registry holds one condition with both bots subscribed
    subscriptions = ConditionSubscription.objects.filter(active=True, bot_config__role="entry")
    assert subscriptions.count() == 2
    assert subscriptions.values("condition_id").distinct().count() == 1
