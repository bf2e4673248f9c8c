"""The condition registry API at its seed paths."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conditions.models import BarEvaluation, Condition, ConditionSubscription
from tests.api.error_shape import errors_of
from tests.factories import BotFactory, ConditionFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

REGISTRY_SHAPE = {
    "symbol": "BTCUSDT",
    "timeframe": "1h",
    "indicator": "RSI",
    "operator": "crosses_below",
    "value": 30,
    "period": 14,
}


def register(client, body: dict, path: str = "/api/conditions/register"):
    return client.post(path, body, format="json")


def test_registering_a_new_condition_answers_201_with_its_id_and_canonical_form(client):
    response = register(client, REGISTRY_SHAPE)

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "registered"
    assert len(body["condition_id"]) == 64
    assert body["canonical"]["left"] == {
        "kind": "indicator",
        "name": "RSI",
        "params": {"length": 14},
        "output": "value",
    }
    assert body["canonical"]["op"] == "crosses_below"
    assert Condition.objects.filter(pk=body["condition_id"]).exists()


def test_the_three_input_shapes_of_one_condition_share_one_condition_id(client):
    registry = {**REGISTRY_SHAPE, "operator": "<"}
    alert_shape_wrapped = {
        "symbol": "btcusdt",
        "timeframe": "60m",
        "condition": {
            "type": "indicator",
            "indicator": "RSI",
            "component": "RSI",
            "operator": "<",
            "compareWith": "value",
            "compareValue": 30,
            "timeframe": "same",
            "settings": {"length": 14},
        },
    }
    short = {
        "indicator": "RSI",
        "operator": "<",
        "value": 30.0,
        "symbol": "BTCUSDT",
        "timeframe": "1H",
    }

    first = register(client, registry)
    second = register(client, alert_shape_wrapped)
    third = register(client, short)

    assert (first.status_code, second.status_code, third.status_code) == (201, 200, 200)
    assert [r.json()["status"] for r in (first, second, third)] == [
        "registered",
        "existing",
        "existing",
    ]
    assert len({r.json()["condition_id"] for r in (first, second, third)}) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"indicator": "RSX"}, "indicator"),
        ({"operator": "sideways"}, "operator"),
        ({"timeframe": "7m"}, "timeframe"),
        ({"symbol": "BTC-USDT"}, "symbol"),
        ({"period": 0}, "period"),
    ],
)
def test_an_unusable_condition_answers_400_naming_the_field(client, change, field):
    response = register(client, {**REGISTRY_SHAPE, **change})

    assert response.status_code == 400
    assert field in errors_of(response)
    assert not Condition.objects.exists()


def test_errors_inside_a_wrapped_condition_are_named_from_the_body(client):
    body = {
        "symbol": "BTCUSDT",
        "timeframe": "1h",
        "condition": {"indicator": "RSX", "operator": "<"},
    }

    response = register(client, body)

    assert response.status_code == 400
    assert "unknown indicator" in errors_of(response)["condition.indicator"]


def test_a_body_that_is_not_a_json_object_answers_400(client):
    response = client.post("/api/conditions/register", [REGISTRY_SHAPE], format="json")

    assert response.status_code == 400
    assert None in errors_of(response)


def test_register_answers_with_and_without_the_trailing_slash(client):
    assert register(client, REGISTRY_SHAPE, "/api/conditions/register/").status_code == 201
    assert register(client, REGISTRY_SHAPE, "/api/conditions/register").status_code == 200


def test_subscribing_an_own_bot_twice_gives_one_subscription(client, user):
    bot = BotFactory(user=user)
    condition_id = register(client, REGISTRY_SHAPE).json()["condition_id"]
    body = {"bot_id": bot.pk, "condition_id": condition_id, "bot_config": {"role": "entry"}}

    first = client.post("/api/conditions/subscribe", body, format="json")
    again = client.post("/api/conditions/subscribe", body, format="json")

    assert first.status_code == 201
    assert first.json()["status"] == "subscribed"
    assert first.json()["bot_type"] == "dca"
    assert again.status_code == 200
    assert again.json()["status"] == "existing"
    assert again.json()["subscription_id"] == first.json()["subscription_id"]
    assert ConditionSubscription.objects.filter(bot=bot, active=True).count() == 1


def test_subscribing_another_users_bot_answers_404_and_subscribes_nothing(client, intruder):
    foreign_bot = BotFactory(user=intruder)
    condition_id = register(client, REGISTRY_SHAPE).json()["condition_id"]

    response = client.post(
        "/api/conditions/subscribe",
        {"bot_id": foreign_bot.pk, "condition_id": condition_id},
        format="json",
    )

    assert response.status_code == 404
    assert "bot_id" in errors_of(response)
    assert not ConditionSubscription.objects.exists()


def test_subscribing_to_an_unregistered_condition_answers_404(client, user):
    bot = BotFactory(user=user)

    response = client.post(
        "/api/conditions/subscribe", {"bot_id": bot.pk, "condition_id": "ab" * 32}, format="json"
    )

    assert response.status_code == 404
    assert "condition_id" in errors_of(response)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"condition_id": "not-a-hash"}, "condition_id"),
        ({"bot_type": "grid"}, "bot_type"),
        ({"bot_type": "martingale"}, "bot_type"),
        ({"bot_config": ["not", "an", "object"]}, "bot_config"),
        ({"bot_id": "seven"}, "bot_id"),
    ],
)
def test_a_malformed_subscription_answers_400_naming_the_field(client, user, body, field):
    bot = BotFactory(user=user)
    condition = ConditionFactory()
    request = {"bot_id": bot.pk, "condition_id": condition.pk, **body}

    response = client.post("/api/conditions/subscribe", request, format="json")

    assert response.status_code == 400
    assert field in errors_of(response)


def test_unsubscribing_ends_the_subscription_once(client, user):
    subscription = SubscriptionFactory(bot=BotFactory(user=user))

    first = client.delete(f"/api/conditions/subscribe/{subscription.pk}")
    again = client.delete(f"/api/conditions/subscribe/{subscription.pk}")

    assert first.status_code == 204
    assert again.status_code == 404
    subscription.refresh_from_db()
    assert subscription.active is False


def test_status_shows_subscribers_counts_and_the_latest_values(client, user):
    # given a registered condition, subscribed by one bot and evaluated twice
    condition_id = register(client, REGISTRY_SHAPE).json()["condition_id"]
    client.post(
        "/api/conditions/subscribe",
        {"bot_id": BotFactory(user=user).pk, "condition_id": condition_id},
        format="json",
    )
    # (in its pair's cache rows, beside another condition; a later row holds
    # only the other one, and another symbol's row holds an equal id)
    other = {"left": 1.0, "right": 2.0, "fired": False}
    for hour, rsi in ((10, 35.5), (11, 28.25)):
        BarEvaluation.objects.create(
            symbol="BTCUSDT",
            timeframe="1h",
            candle_time=datetime(2024, 5, 1, hour, tzinfo=UTC),
            indicator_values={
                condition_id: {"left": rsi, "right": 30.0, "fired": rsi < 30},
                "cd" * 32: other,
            },
        )
    BarEvaluation.objects.create(
        symbol="BTCUSDT",
        timeframe="1h",
        candle_time=datetime(2024, 5, 1, 12, tzinfo=UTC),
        indicator_values={"cd" * 32: other},
    )
    BarEvaluation.objects.create(
        symbol="ETHUSDT",
        timeframe="1h",
        candle_time=datetime(2024, 5, 1, 13, tzinfo=UTC),
        indicator_values={condition_id: other},
    )
    Condition.objects.filter(pk=condition_id).update(trigger_count=1)

    # when its status is read
    response = client.get(f"/api/conditions/{condition_id}/status")

    # then it has all of them, and the latest evaluation's values
    assert response.status_code == 200
    status = response.json()
    assert status["subscribers"] == 1
    assert status["evaluation_count"] == 2
    latest = BarEvaluation.objects.get(candle_time=datetime(2024, 5, 1, 11, tzinfo=UTC))
    assert status["last_evaluated_at"] == latest.evaluated_at.isoformat().replace("+00:00", "Z")
    assert status["trigger_count"] == 1
    assert status["canonical"]["op"] == "crosses_below"
    assert status["latest_evaluation"]["candle_time"] == "2024-05-01T11:00:00Z"
    assert status["latest_evaluation"]["timeframe"] == "1h"
    assert status["latest_evaluation"]["values"] == {"left": 28.25, "right": 30.0, "fired": True}


@pytest.mark.parametrize("condition_id", ["ab" * 32, "not-a-condition-id"])
def test_status_of_an_unknown_condition_answers_404(client, condition_id):
    response = client.get(f"/api/conditions/{condition_id}/status")

    assert response.status_code == 404
    assert None in errors_of(response)


def test_user_subscriptions_lists_only_own_active_ones_and_filters_by_bot(client, user, intruder):
    own_bot, other_own_bot = BotFactory(user=user), BotFactory(user=user)
    listed = SubscriptionFactory(bot=own_bot)
    SubscriptionFactory(bot=other_own_bot)
    SubscriptionFactory(bot=own_bot, active=False)
    SubscriptionFactory(bot=BotFactory(user=intruder))

    everything = client.get("/api/conditions/user/subscriptions").json()
    for_one_bot = client.get(f"/api/conditions/user/subscriptions?bot={own_bot.pk}").json()

    assert everything["count"] == 2
    assert [s["subscription_id"] for s in for_one_bot["results"]] == [listed.pk]
    assert for_one_bot["results"][0]["condition_id"] == listed.condition_id


def test_a_malformed_subscription_filter_answers_400(client):
    response = client.get("/api/conditions/user/subscriptions?bot=first")

    assert response.status_code == 400
    assert "bot" in errors_of(response)
