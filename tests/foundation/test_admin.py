"""Every admin page an operator can reach renders, and only for staff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.authtoken.models import Token

from alerts.models import Alert, Notification, OutboxMessage, WebhookDelivery, WebhookSecret
from bots.models import Bot, DealEvent, PaperOrder
from conditions.models import BarEvaluation, ConditionTrigger, EvaluationCursor
from tests.factories import (
    AlertFactory,
    AlertTriggerFactory,
    ExchangeAccountFactory,
    OrderFactory,
    SubscriptionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

SECRET_KEY_VALUE = "binance-api-key-that-must-never-show"


@pytest.fixture
def populated():
    """One row of every model, so change pages have something to render."""
    trigger = AlertTriggerFactory()
    subscription = SubscriptionFactory()
    account = ExchangeAccountFactory(
        exchange="binance", api_key=SECRET_KEY_VALUE, api_secret="s3cr3t-value-hidden"
    )
    order = OrderFactory(deal__bot=subscription.bot)
    bar = datetime(2018, 1, 10, 12, 35, tzinfo=UTC)
    BarEvaluation.objects.create(
        symbol="ETHBTC",
        timeframe="5m",
        candle_time=bar,
        indicator_values={subscription.condition_id: {"left": 28.1, "fired": False}},
    )
    ConditionTrigger.objects.create(
        condition=subscription.condition, symbol="ETHBTC", timeframe="5m", candle_time=bar
    )
    Notification.objects.create(user=trigger.alert.user, trigger=trigger, title="RSI below 30")
    WebhookDelivery.objects.create(
        trigger=trigger,
        url="https://example.com/hook",
        attempt=1,
        outcome="delivered",
        status_code=200,
    )
    OutboxMessage.objects.create(topic="dispatch_alert_trigger", key=f"trigger:{trigger.pk}")
    WebhookSecret.objects.create(user=trigger.alert.user)
    DealEvent.objects.create(deal=order.deal, to_state="opening", cause="entry")
    Group.objects.create(name="operators")
    EvaluationCursor.objects.create(symbol="ETHBTC", timeframe="5m", last_bar=bar)
    PaperOrder.objects.create(
        account=account,
        client_order_id="tdn-1-base",
        symbol="ETHBTC",
        side="buy",
        type="market",
        placed_at_ms=1515974400000,
    )
    Token.objects.create(user=trigger.alert.user)
    return account


def admin_urls():
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        yield model, model_admin, info


@pytest.fixture
def staff_client(client):
    operator = UserFactory(username="operator", is_staff=True, is_superuser=True)
    client.force_login(operator)
    return client


def test_every_changelist_and_change_page_renders_for_staff(staff_client, populated):
    assert len(admin.site._registry) >= 14
    for model, _model_admin, info in admin_urls():
        changelist = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert changelist.status_code == 200, model
        obj = model.objects.first()
        assert obj is not None, f"fixture has no {model.__name__}"
        change = staff_client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        assert change.status_code == 200, model


def test_changelists_accept_their_filters_and_search(staff_client, populated):
    for model, model_admin, info in admin_urls():
        url = reverse("admin:{}_{}_changelist".format(*info))
        if model_admin.search_fields:
            assert staff_client.get(url, {"q": "ETH"}).status_code == 200, model


def test_the_evaluation_cache_page_lists_evaluations(staff_client, populated):
    page = reverse("admin:conditions_evaluation_cache")
    condition = BarEvaluation.objects.get().indicator_values.popitem()[0]

    by_pair = staff_client.get(page, {"symbol": "ethbtc"})
    of_condition = staff_client.get(page, {"condition": condition})
    of_another = staff_client.get(page, {"condition": "ab" * 32})
    not_an_id = staff_client.get(page, {"condition": f'{condition}"."fired'})
    its_page = staff_client.get(reverse("admin:conditions_condition_change", args=[condition]))

    assert by_pair.status_code == 200
    assert "<td>ETHBTC</td><td>5m</td>" in by_pair.content.decode()
    assert "28.1" in of_condition.content.decode()
    assert "No evaluations." in of_another.content.decode()
    assert "No evaluations." in not_an_id.content.decode()
    assert "28.1" in its_page.content.decode()


def test_admin_is_refused_to_a_logged_in_user_who_is_not_staff(client, populated):
    client.force_login(UserFactory(username="customer"))
    for _model, _model_admin, info in admin_urls():
        response = client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert client.get(reverse("admin:conditions_evaluation_cache")).status_code == 302


def test_exchange_secrets_and_webhook_secrets_are_never_displayed(staff_client, populated):
    account = populated
    pages = [
        reverse("admin:bots_exchangeaccount_changelist"),
        reverse("admin:bots_exchangeaccount_change", args=[account.pk]),
        reverse("admin:alerts_webhooksecret_changelist"),
        reverse("admin:alerts_webhooksecret_change", args=[WebhookSecret.objects.get().pk]),
    ]
    webhook_secret = WebhookSecret.objects.get().secret
    for url in pages:
        html = staff_client.get(url).content.decode()
        assert SECRET_KEY_VALUE not in html and "s3cr3t-value-hidden" not in html
        assert webhook_secret not in html


def test_saving_an_account_without_retyping_keys_keeps_them(staff_client, populated):
    account = populated
    url = reverse("admin:bots_exchangeaccount_change", args=[account.pk])
    response = staff_client.post(
        url,
        {
            "user": account.user_id,
            "name": "renamed",
            "exchange": "binance",
            "api_key": "",
            "api_secret": "",
            "paper_balances": "{}",
        },
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.name == "renamed" and account.api_key == SECRET_KEY_VALUE


def test_pause_and_resume_actions_change_alerts_and_bots(staff_client, populated):
    alert = Alert.objects.first()
    bot = Bot.objects.first()
    bot.status = "running"
    bot.save()
    staff_client.post(
        reverse("admin:alerts_alert_changelist"),
        {"action": "pause", "_selected_action": [alert.pk]},
    )
    staff_client.post(
        reverse("admin:bots_bot_changelist"), {"action": "pause", "_selected_action": [bot.pk]}
    )
    alert.refresh_from_db()
    bot.refresh_from_db()
    assert (alert.status, bot.status) == ("paused", "paused")
    staff_client.post(
        reverse("admin:alerts_alert_changelist"),
        {"action": "resume", "_selected_action": [alert.pk]},
    )
    staff_client.post(
        reverse("admin:bots_bot_changelist"), {"action": "resume", "_selected_action": [bot.pk]}
    )
    alert.refresh_from_db()
    bot.refresh_from_db()
    assert (alert.status, bot.status) == ("active", "running")


def test_logs_cannot_be_edited_or_deleted_from_the_admin(staff_client, populated):
    for name in ("conditiontrigger", "alerttrigger", "order", "webhookdelivery", "dealevent"):
        app = {
            "conditiontrigger": "conditions",
            "alerttrigger": "alerts",
            "webhookdelivery": "alerts",
        }.get(name, "bots")
        model_admin = next(
            a
            for m, a in admin.site._registry.items()
            if m._meta.model_name == name and m._meta.app_label == app
        )
        request = staff_client.get("/").wsgi_request
        request.user = UserFactory(username="root", is_staff=True, is_superuser=True)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)
        assert not model_admin.has_add_permission(request)


def test_the_status_page_shows_how_much_sharing_saves(staff_client, populated):
    # given one condition used by a bot and by two alerts
    shared = ConditionTrigger.objects.first().condition
    for alert in (Alert.objects.first(), AlertFactory()):
        alert.conditions.add(shared)
    # when an operator opens the status page
    response = staff_client.get(reverse("admin:conditions_status"))
    # then three users of one condition mean two evaluations avoided per bar
    assert response.status_code == 200
    html = " ".join(response.content.decode().split())
    assert "<th>conditions in use</th><td>1</td>" in html
    assert "<th>subscribers per condition</th><td>3.0</td>" in html
    assert "<th>evaluations avoided by sharing, per bar</th><td>2</td>" in html
