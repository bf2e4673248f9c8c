"""Another user's ids answer 404 on every object endpoint and in every body
that references one, and change nothing; lists show only one's own."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict

from tests.api.error_shape import errors_of
from tests.factories import (
    AlertFactory,
    AlertTriggerFactory,
    BotFactory,
    DealFactory,
    ExchangeAccountFactory,
    NotificationFactory,
    OrderFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db

OWNERS_NAME = "owner-only-d41d8cd9"
ALERT_BODY = {
    "name": "taken over",
    "symbol": "ETHBTC",
    "base_timeframe": "5m",
    "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": ">", "compareValue": 70}]},
}
BOT_BODY = {
    "name": "taken over",
    "symbol": "ETHBTC",
    "base_timeframe": "5m",
    "base_order_size": "10",
    "take_profit": "1",
}


@pytest.fixture
def owned(user) -> dict:
    """One of everything, belonging to `user`."""
    account = ExchangeAccountFactory(user=user, name=OWNERS_NAME)
    bot = BotFactory(user=user, account=account, name=OWNERS_NAME)
    deal = DealFactory(bot=bot, state="open")
    alert = AlertFactory(user=user, name=OWNERS_NAME)
    trigger = AlertTriggerFactory(alert=alert)
    return {
        "account": account,
        "bot": bot,
        "deal": deal,
        "order": OrderFactory(deal=deal),
        "alert": alert,
        "notification": NotificationFactory(trigger=trigger, title=OWNERS_NAME),
        "subscription": SubscriptionFactory(bot=bot),
    }


OBJECT_ENDPOINTS = [
    ("get", "/api/alerts/{alert}/", None),
    ("put", "/api/alerts/{alert}/", ALERT_BODY),
    ("patch", "/api/alerts/{alert}/", {"name": "taken over"}),
    ("delete", "/api/alerts/{alert}/", None),
    ("post", "/api/alerts/{alert}/pause/", None),
    ("post", "/api/alerts/{alert}/resume/", None),
    ("get", "/api/alerts/{alert}/triggers/", None),
    ("get", "/api/notifications/{notification}/", None),
    ("post", "/api/notifications/{notification}/read/", None),
    ("get", "/api/bots/{bot}/", None),
    ("put", "/api/bots/{bot}/", BOT_BODY),
    ("patch", "/api/bots/{bot}/", {"name": "taken over"}),
    ("delete", "/api/bots/{bot}/", None),
    ("post", "/api/bots/{bot}/start", None),
    ("post", "/api/bots/{bot}/pause", None),
    ("get", "/api/deals/{deal}/", None),
    ("post", "/api/deals/{deal}/close", None),
    ("get", "/api/orders/{order}/", None),
    ("get", "/api/exchange-accounts/{account}/", None),
    ("put", "/api/exchange-accounts/{account}/", {"name": "taken over"}),
    ("patch", "/api/exchange-accounts/{account}/", {"name": "taken over"}),
    ("delete", "/api/exchange-accounts/{account}/", None),
    ("delete", "/api/conditions/subscribe/{subscription}", None),
]


def snapshot(objects: dict) -> dict:
    """Every owned row as stored (refetched), to show nothing changed."""
    return {
        name: model_to_dict(type(obj).objects.get(pk=obj.pk))
        if type(obj).objects.filter(pk=obj.pk).exists()
        else None
        for name, obj in objects.items()
    }


@pytest.mark.parametrize(("method", "template", "body"), OBJECT_ENDPOINTS)
def test_another_users_object_answers_404_and_stays_as_it_was(
    intruder_client, owned, method, template, body
):
    path = template.format(**{name: obj.pk for name, obj in owned.items()})
    before = snapshot(owned)

    response = getattr(intruder_client, method)(path, body, format="json")

    assert response.status_code == 404, response.content
    assert None in errors_of(response)
    assert OWNERS_NAME not in response.content.decode()
    assert snapshot(owned) == before


def test_subscribing_with_another_users_bot_answers_404(intruder_client, owned):
    response = intruder_client.post(
        "/api/conditions/subscribe",
        {"bot_id": owned["bot"].pk, "condition_id": owned["subscription"].condition_id},
        format="json",
    )

    assert response.status_code == 404
    assert "bot_id" in errors_of(response)


def test_a_bot_on_another_users_account_answers_404(intruder_client, owned):
    response = intruder_client.post(
        "/api/bots/", {**BOT_BODY, "account": owned["account"].pk}, format="json"
    )

    assert response.status_code == 404
    assert "account" in errors_of(response)


def test_moving_an_own_bot_to_another_users_account_answers_404(intruder_client, intruder, owned):
    own_bot = BotFactory(user=intruder)

    response = intruder_client.patch(
        f"/api/bots/{own_bot.pk}/", {"account": owned["account"].pk}, format="json"
    )

    assert response.status_code == 404
    own_bot.refresh_from_db()
    assert own_bot.account.user == intruder


@pytest.mark.parametrize(
    "path",
    [
        "/api/alerts/",
        "/api/notifications/",
        "/api/bots/",
        "/api/deals/",
        "/api/orders/",
        "/api/exchange-accounts/",
        "/api/conditions/user/subscriptions",
    ],
)
def test_lists_show_nothing_of_another_user(intruder_client, owned, path):
    response = intruder_client.get(path)

    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_filtering_by_another_users_bot_finds_nothing(intruder_client, owned):
    for path in ("/api/deals/", "/api/orders/", "/api/conditions/user/subscriptions"):
        assert intruder_client.get(f"{path}?bot={owned['bot'].pk}").json()["count"] == 0
