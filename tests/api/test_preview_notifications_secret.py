"""Alert previews over the kline cache, notifications, the webhook secret."""

from __future__ import annotations

import re
import time

import pytest

from alerts.models import Notification, WebhookSecret
from tests.api.error_shape import errors_of
from tests.factories import NotificationFactory

pytestmark = pytest.mark.django_db

OVERSOLD_ETH = {
    "symbol": "ETHBTC",
    "base_timeframe": "5m",
    "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}]},
    "bars": 1000,
}


def test_a_preview_tells_when_the_alert_would_have_fired(client, binance_stub):
    response = client.post("/api/alerts/preview", OVERSOLD_ETH, format="json")

    assert response.status_code == 200
    preview = response.json()
    assert (preview["symbol"], preview["base_timeframe"], preview["bars"]) == ("ETHBTC", "5m", 1000)
    assert preview["from"] < preview["to"] <= "2018-01-17T11:55:00Z"
    assert preview["triggers"], "RSI(14) dips below 30 in a week of ETHBTC 5m candles"
    (condition,) = preview["conditions"]
    for trigger in preview["triggers"]:
        assert preview["from"] <= trigger["bar_open_time"] <= preview["to"]
        assert trigger["values"][condition["condition_id"]]["left"] < 30


def test_a_shorter_preview_window_reports_only_its_own_bars(client, binance_stub):
    everything = client.post("/api/alerts/preview", OVERSOLD_ETH, format="json").json()

    recent = client.post("/api/alerts/preview", {**OVERSOLD_ETH, "bars": 100}, format="json").json()

    assert recent["bars"] == 100
    assert recent["to"] == everything["to"]
    assert recent["triggers"] == [
        t for t in everything["triggers"] if t["bar_open_time"] >= recent["from"]
    ]


def test_previewing_a_symbol_the_exchange_does_not_list_names_the_symbol(client, binance_stub):
    response = client.post(
        "/api/alerts/preview", {**OVERSOLD_ETH, "symbol": "NOPEBTC"}, format="json"
    )

    assert response.status_code == 400
    assert "NOPEBTC" in errors_of(response)["symbol"]


def test_a_preview_without_market_data_answers_503_never_500(client, dead_binance):
    response = client.post("/api/alerts/preview", OVERSOLD_ETH, format="json")

    assert response.status_code == 503
    assert "market data" in errors_of(response)[None]
    assert int(response["Retry-After"]) > 0


def test_a_hanging_exchange_answers_503_within_a_web_requests_time(client, binance_stub, settings):
    settings.BINANCE_TIMEOUT_S = 0.3
    binance_stub.inject_fault("hang", count=10, seconds=3)

    started = time.monotonic()
    response = client.post("/api/alerts/preview", OVERSOLD_ETH, format="json")

    assert response.status_code == 503
    assert time.monotonic() - started < 2.5
    assert int(response["Retry-After"]) > 0


def test_a_rate_limited_exchange_answers_503_with_its_retry_after(client, binance_stub):
    binance_stub.inject_fault("429", count=10, retry_after=42)

    response = client.post("/api/alerts/preview", OVERSOLD_ETH, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == "42"
    assert "rate limiting" in errors_of(response)[None]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<>"}]}},
            "conditionConfig.conditions.0.operator",
        ),
        ({"bars": 5000}, "bars"),
        ({"base_timeframe": "2m"}, "base_timeframe"),
    ],
)
def test_a_malformed_preview_answers_400_before_asking_for_candles(
    client, dead_binance, change, field
):
    response = client.post("/api/alerts/preview", {**OVERSOLD_ETH, **change}, format="json")

    assert response.status_code == 400
    assert field in errors_of(response)


def test_notifications_list_only_own_and_filter_unread(client, user, intruder):
    unread = NotificationFactory(trigger__alert__user=user)
    NotificationFactory(trigger__alert__user=user, read_at="2024-01-01T00:00:00Z")
    NotificationFactory(trigger__alert__user=intruder)

    everything = client.get("/api/notifications/").json()
    only_unread = client.get("/api/notifications/?unread=true").json()

    assert everything["count"] == 2
    assert [n["id"] for n in only_unread["results"]] == [unread.pk]
    assert only_unread["results"][0]["alert_id"] == unread.trigger.alert_id


def test_marking_one_notification_read(client, user):
    notification = NotificationFactory(trigger__alert__user=user)
    unread = client.get(f"/api/notifications/{notification.pk}/").json()

    response = client.post(f"/api/notifications/{notification.pk}/read/")

    assert unread["read_at"] is None
    assert response.status_code == 200
    assert response.json()["read_at"] is not None


def test_marking_all_read_leaves_other_users_alone(client, user, intruder):
    NotificationFactory.create_batch(3, trigger__alert__user=user)
    theirs = NotificationFactory(trigger__alert__user=intruder)

    response = client.post("/api/notifications/read-all/")

    assert response.json() == {"marked": 3}
    assert not Notification.objects.filter(user=user, read_at__isnull=True).exists()
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_the_webhook_secret_is_shown_once_when_rotated_and_never_again(client, user):
    before = client.get("/api/webhook-secret").json()

    first = client.post("/api/webhook-secret/rotate").json()
    after = client.get("/api/webhook-secret").json()
    second = client.post("/api/webhook-secret/rotate").json()

    assert before == {"exists": False, "rotated_at": None}
    assert re.fullmatch(r"[0-9a-f]{64}", first["secret"])
    assert after["exists"] is True and "secret" not in after
    assert second["secret"] != first["secret"]
    assert WebhookSecret.objects.get(user=user).secret == second["secret"]
