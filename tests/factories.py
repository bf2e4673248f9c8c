"""factory-boy factories for the models; sensible, valid defaults."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import factory
from django.contrib.auth import get_user_model

from alerts.models import Alert, AlertTrigger
from bots.models import Bot, Deal, ExchangeAccount, Order
from conditions.models import Condition, ConditionSubscription


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"trader{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery")


class ConditionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Condition

    condition_id = factory.Sequence(lambda n: hashlib.sha256(f"condition-{n}".encode()).hexdigest())
    condition_type = "indicator"
    symbol = "ETHBTC"
    timeframe = "5m"
    indicator_config = factory.LazyAttribute(
        lambda c: {
            "symbol": c.symbol,
            "timeframe": c.timeframe,
            "left": {
                "kind": "indicator",
                "name": "RSI",
                "params": {"length": 14},
                "output": "value",
            },
            "op": "lt",
            "right": {"kind": "const", "value": 30.0},
        }
    )


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"alert {n}")
    symbol = "ETHBTC"
    base_timeframe = "5m"
    condition_config = {
        "mode": "simple",
        "conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}],
    }
    action = {"type": "notify"}


class AlertTriggerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertTrigger

    alert = factory.SubFactory(AlertFactory)
    bar_open_time = datetime(2018, 1, 10, 12, 35, tzinfo=UTC)


class ExchangeAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ExchangeAccount

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"paper {n}")


# DCA settings (BOTS.md) that validate; tests override what they are about.
DCA_SETTINGS = {
    "entry": {"mode": "asap"},
    "base_order_size": "0.01",
    "safety_order_size": "0.005",
    "max_safety_orders": 2,
    "active_safety_orders": 1,
    "price_deviation": 1.0,
    "step_scale": 1.0,
    "volume_scale": 1.0,
    "take_profit": 1.0,
    "take_profit_type": "average",
    "trailing_deviation": None,
    "stop_loss": None,
    "cooldown": 0,
    "max_active_deals": 1,
    "safety_mode": "triggered",
}


class BotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Bot

    user = factory.SubFactory(UserFactory)
    account = factory.SubFactory(ExchangeAccountFactory, user=factory.SelfAttribute("..user"))
    name = factory.Sequence(lambda n: f"dca {n}")
    symbol = "ETHBTC"
    base_timeframe = "5m"
    settings = {"base_order_size": "100", "entry": {"mode": "asap"}}


def playbook_entry(*steps: tuple[dict, int]) -> dict:
    """A bot's entry (BOTS.md) needing every (condition, validity in bars),
    in that priority order."""
    return {
        "mode": "playbook",
        "conditions": [
            {
                "condition": condition,
                "priority": priority,
                "validityDuration": validity,
                "validityDurationUnit": "bars",
            }
            for priority, (condition, validity) in enumerate(steps, start=1)
        ],
        "gateLogic": "ALL",
    }


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConditionSubscription

    bot = factory.SubFactory(BotFactory)
    user = factory.SelfAttribute("bot.user")
    condition = factory.SubFactory(ConditionFactory)
    bot_type = "dca"


class DealFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deal

    bot = factory.SubFactory(BotFactory)
    entry_key = factory.Sequence(lambda n: f"entry-{n}")


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    deal = factory.SubFactory(DealFactory)
    leg = "base"
    side = "buy"
    type = "market"
    quote_amount = "100"
    client_order_id = factory.LazyAttribute(lambda o: f"td-{o.deal.pk}-{o.leg}")


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "alerts.Notification"

    trigger = factory.SubFactory(AlertTriggerFactory)
    user = factory.SelfAttribute("trigger.alert.user")
    title = factory.Sequence(lambda n: f"Alert {n}: ETHBTC 5m")
    body = "Fired at the bar opening 2018-01-10 12:35 UTC."


class RegisteredAlertFactory(AlertFactory):
    """An alert saved the way the API saves one (alerts.services.save_alert), so
    its conditions are in the registry and count as subscribers. By default its
    one condition, close > 0, holds at every bar."""

    condition_config = {
        "mode": "simple",
        "conditions": [
            {"type": "price", "operator": ">", "compareWith": "value", "compareValue": 0}
        ],
    }

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from alerts.services import save_alert

        alert = model_class(*args, **kwargs)
        save_alert(alert)
        return alert
