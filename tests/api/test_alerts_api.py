"""Alerts: CRUD in the alert shape, pause and resume, triggers, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.models import Alert
from conditions.models import Condition
from tests.api.error_shape import errors_of
from tests.factories import AlertFactory, AlertTriggerFactory

pytestmark = pytest.mark.django_db

SIMPLE = {
    "name": "oversold",
    "symbol": "btcusdt",
    "base_timeframe": "60m",
    "conditionConfig": {
        "mode": "simple",
        "conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}],
    },
}
PLAYBOOK = {
    "symbol": "BTCUSDT",
    "base_timeframe": "15m",
    "conditionConfig": {
        "mode": "playbook",
        "conditions": [
            {
                "condition": {"indicator": "RSI", "operator": "<", "compareValue": 30},
                "priority": 1,
                "logic": "AND",
                "validityDuration": 10,
                "validityDurationUnit": "bars",
            },
            {
                "condition": {
                    "type": "price",
                    "operator": ">",
                    "compareWith": "indicator_component",
                    "rhs": {"indicator": "EMA", "component": "EMA", "settings": {"period": 20}},
                    "timeframe": "1h",
                },
                "priority": 2,
            },
        ],
        "gateLogic": "ALL",
        "evaluationOrder": "priority",
    },
    "action": {"type": "notify"},
    "fireMode": "per_bar_close",
    "status": "active",
}


def create(client, body: dict):
    return client.post("/api/alerts/", body, format="json")


def test_creating_an_alert_normalizes_it_and_registers_its_conditions(client, user):
    response = create(client, SIMPLE)

    assert response.status_code == 201
    alert = response.json()
    assert (alert["symbol"], alert["base_timeframe"]) == ("BTCUSDT", "1h")
    assert (alert["status"], alert["fireMode"], alert["action"]) == (
        "active",
        "per_bar_close",
        {"type": "notify"},
    )
    assert len(alert["condition_ids"]) == 1
    assert Condition.objects.filter(pk=alert["condition_ids"][0], symbol="BTCUSDT").exists()
    assert Alert.objects.get(pk=alert["id"]).user == user


def test_a_playbook_alert_registers_each_of_its_conditions(client):
    response = create(client, PLAYBOOK)

    assert response.status_code == 201
    ids = response.json()["condition_ids"]
    assert len(ids) == 2
    timeframes = set(Condition.objects.filter(pk__in=ids).values_list("timeframe", flat=True))
    assert timeframes == {"15m", "1h"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {**SIMPLE, "conditionConfig": {"conditions": [{"indicator": "RSX", "operator": "<"}]}},
            "conditionConfig.conditions.0.indicator",
        ),
        (
            {
                **PLAYBOOK,
                "conditionConfig": {
                    "mode": "playbook",
                    "conditions": [{"condition": {"indicator": "RSI", "operator": "beyond"}}],
                },
            },
            "conditionConfig.conditions.0.condition.operator",
        ),
        ({**SIMPLE, "base_timeframe": "7m"}, "base_timeframe"),
        ({**SIMPLE, "symbol": "BTC/USDT"}, "symbol"),
        ({**SIMPLE, "fireMode": "sometimes"}, "fireMode"),
        ({**SIMPLE, "conditionConfig": "RSI < 30"}, "conditionConfig"),
        ({**SIMPLE, "action": {"type": "sms"}}, "action.type"),
        ({**SIMPLE, "status": "triggered"}, "status"),
        ({**SIMPLE, "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "no symbol"}, "symbol"),
    ],
)
def test_a_malformed_alert_answers_400_naming_the_field_and_saves_nothing(client, body, field):
    response = create(client, body)

    assert response.status_code == 400
    assert field in errors_of(response)
    assert not Alert.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://93.184.215.14/hook",
        "https://user:pass@93.184.215.14/hook",
    ],
)
def test_a_webhook_to_a_private_host_or_another_scheme_is_refused(client, url):
    response = create(client, {**SIMPLE, "action": {"type": "webhook", "url": url}})

    assert response.status_code == 400
    assert "action.url" in errors_of(response)


def test_a_webhook_to_a_public_address_is_saved(client):
    action = {"type": "webhook", "url": "https://93.184.215.14/tradeeon"}

    response = create(client, {**SIMPLE, "action": action})

    assert response.status_code == 201
    assert response.json()["action"] == action


def test_hosts_the_setting_allows_may_be_private(client, settings):
    settings.WEBHOOK_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]

    response = create(
        client, {**SIMPLE, "action": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}
    )

    assert response.status_code == 201


def test_alerts_per_user_and_symbol_are_limited(client, intruder_client, settings):
    settings.ALERT_MAX_ALERTS_PER_SYMBOL = 2
    assert create(client, SIMPLE).status_code == 201
    assert create(client, SIMPLE).status_code == 201

    refused = create(client, SIMPLE)

    assert refused.status_code == 400
    assert "at most 2 alerts" in errors_of(refused)["symbol"]
    assert create(client, {**SIMPLE, "symbol": "ETHUSDT"}).status_code == 201
    assert create(intruder_client, SIMPLE).status_code == 201


def test_moving_an_alert_to_a_full_symbol_is_refused(client, user, settings):
    settings.ALERT_MAX_ALERTS_PER_SYMBOL = 1
    AlertFactory(user=user, symbol="BTCUSDT")
    other = create(client, {**SIMPLE, "symbol": "ETHUSDT"}).json()

    response = client.patch(f"/api/alerts/{other['id']}/", {"symbol": "BTCUSDT"}, format="json")

    assert response.status_code == 400
    assert "symbol" in errors_of(response)
    assert Alert.objects.get(pk=other["id"]).symbol == "ETHUSDT"


def test_listing_shows_only_own_alerts_and_filters_them(client, user, intruder):
    own_active = AlertFactory(user=user, symbol="ETHBTC")
    AlertFactory(user=user, symbol="LTCBTC", status="paused")
    AlertFactory(user=intruder, symbol="ETHBTC")

    everything = client.get("/api/alerts/").json()
    filtered = client.get("/api/alerts/?status=active&symbol=ethbtc").json()

    assert everything["count"] == 2
    assert [a["id"] for a in filtered["results"]] == [own_active.pk]


def test_a_malformed_filter_answers_400(client):
    response = client.get("/api/alerts/?status=sleeping")

    assert response.status_code == 400
    assert "status" in errors_of(response)


def test_updating_the_conditions_re_registers_them(client):
    alert = create(client, SIMPLE).json()
    changed = {
        "conditions": [{"indicator": "MACD", "operator": "crosses_above", "component": "hist"}]
    }

    response = client.patch(
        f"/api/alerts/{alert['id']}/", {"conditionConfig": changed}, format="json"
    )

    assert response.status_code == 200
    (new_id,) = response.json()["condition_ids"]
    assert new_id != alert["condition_ids"][0]
    assert Condition.objects.get(pk=new_id).indicator_config["left"]["output"] == "histogram"


def test_a_full_update_replaces_the_alert(client):
    alert = create(client, SIMPLE).json()

    response = client.put(
        f"/api/alerts/{alert['id']}/", {**PLAYBOOK, "name": "swing"}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["base_timeframe"]) == ("swing", "15m")


def test_deleting_an_alert_removes_it(client):
    alert = create(client, SIMPLE).json()

    assert client.delete(f"/api/alerts/{alert['id']}/").status_code == 204
    assert client.get(f"/api/alerts/{alert['id']}/").status_code == 404


def test_pause_and_resume(client):
    alert = create(client, SIMPLE).json()

    paused = client.post(f"/api/alerts/{alert['id']}/pause/")
    resumed = client.post(f"/api/alerts/{alert['id']}/resume")

    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "active")


def test_a_triggered_alert_cannot_be_paused_but_can_be_rearmed(client, user):
    alert = AlertFactory(user=user, status="triggered")

    paused = client.post(f"/api/alerts/{alert.pk}/pause/")
    resumed = client.post(f"/api/alerts/{alert.pk}/resume/")

    assert paused.status_code == 409
    assert None in errors_of(paused)
    assert resumed.json()["status"] == "active"


def test_an_expired_alert_is_not_resumed(client, user):
    alert = AlertFactory(
        user=user, status="expired", expires_at=datetime.now(tz=UTC) - timedelta(days=1)
    )

    response = client.post(f"/api/alerts/{alert.pk}/resume/")

    assert response.status_code == 409
    alert.refresh_from_db()
    assert alert.status == "expired"


def test_triggers_are_listed_newest_first_and_paginated(client, user):
    alert = AlertFactory(user=user)
    for hour in (1, 3, 2):
        AlertTriggerFactory(
            alert=alert,
            bar_open_time=datetime(2024, 1, 1, hour, tzinfo=UTC),
            snapshot={"close": 100.0 + hour},
        )
    AlertTriggerFactory(alert=AlertFactory(user=user))

    page = client.get(f"/api/alerts/{alert.pk}/triggers/?limit=2").json()

    assert page["count"] == 3
    assert [t["bar_open_time"] for t in page["results"]] == [
        "2024-01-01T03:00:00Z",
        "2024-01-01T02:00:00Z",
    ]
    assert page["results"][0]["snapshot"] == {"close": 103.0}
    assert page["next"] is not None


def test_an_alert_reads_back_as_it_was_saved(client):
    created = create(client, PLAYBOOK).json()

    read = client.get(f"/api/alerts/{created['id']}/").json()

    assert read == created
    assert read["conditionConfig"] == PLAYBOOK["conditionConfig"]
