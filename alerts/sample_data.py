"""The sample dataset of the demo: users, their alerts and a DCA bot.

Loading is idempotent: rows are looked up by natural keys and brought back to
their sample state, so the demo can run again and again.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from alerts.models import Alert
from bots.models import Bot, ExchangeAccount

DEMO_PASSWORD = "tradeeon-demo"
OPERATOR = "operator"

RSI_OVERSOLD = {"indicator": "RSI", "operator": "<", "compareValue": 30, "settings": {"length": 14}}

SAMPLE_ALERTS = [
    # (owner, name, symbol, conditionConfig, action, fire_mode)
    (
        "alice",
        "ETHBTC RSI(14) oversold",
        "ETHBTC",
        {"mode": "simple", "conditions": [RSI_OVERSOLD]},
        {"type": "notify"},
        "per_bar_close",
    ),
    # bob watches the very same condition: the registry evaluates it once for both.
    (
        "bob",
        "ETH oversold (bob)",
        "ETHBTC",
        {"mode": "simple", "conditions": [RSI_OVERSOLD]},
        {"type": "notify"},
        "per_bar_close",
    ),
    (
        "alice",
        "LTCBTC price crosses above EMA(50)",
        "LTCBTC",
        {
            "mode": "simple",
            "conditions": [
                {
                    "type": "price",
                    "operator": "crosses_above",
                    "compareWith": "indicator_component",
                    "rhs": {"indicator": "EMA", "component": "EMA", "settings": {"period": 50}},
                }
            ],
        },
        {"type": "notify"},
        "per_bar_close",
    ),
    (
        "bob",
        "ADABTC MACD histogram turns positive",
        "ADABTC",
        {
            "mode": "simple",
            "conditions": [
                {
                    "indicator": "MACD",
                    "component": "histogram",
                    "operator": "crosses_above",
                    "compareValue": 0,
                }
            ],
        },
        {"type": "webhook", "url": "http://127.0.0.1:8765/hooks/tradeeon"},
        "per_bar_close",
    ),
    (
        "carol",
        "XLMBTC dip playbook: RSI < 35 then close below lower Bollinger band",
        "XLMBTC",
        {
            "mode": "playbook",
            "conditions": [
                {
                    "condition": {"indicator": "RSI", "operator": "<", "compareValue": 35},
                    "priority": 1,
                    "logic": "AND",
                    "validityDuration": 6,
                    "validityDurationUnit": "bars",
                },
                {
                    "condition": {
                        "type": "price",
                        "operator": "<",
                        "compareWith": "indicator_component",
                        "rhs": {
                            "indicator": "BBANDS",
                            "component": "lower",
                            "settings": {"length": 20, "std": 2},
                        },
                    },
                    "priority": 2,
                    "logic": "AND",
                },
            ],
            "gateLogic": "ALL",
            "evaluationOrder": "sequential",
        },
        {"type": "notify"},
        "per_bar_close",
    ),
    (
        "carol",
        "ETCBTC volume spike (first one only)",
        "ETCBTC",
        {
            "mode": "simple",
            "conditions": [
                {
                    "type": "volume",
                    "operator": ">",
                    "compareWith": "indicator_component",
                    "rhs": {"indicator": "SMA", "settings": {"length": 20, "source": "volume"}},
                },
                {"indicator": "RSI", "operator": ">", "compareValue": 60},
            ],
            "logic": "AND",
        },
        {"type": "notify"},
        "once",
    ),
]

# The sample markets are quoted in BTC.
SAMPLE_PAPER_BALANCES = {"BTC": "1", "USDT": "10000"}

DCA_SETTINGS = {
    "entry": {"mode": "simple", "conditions": [RSI_OVERSOLD]},
    "base_order_size": "0.01",
    "safety_order_size": "0.005",
    "max_safety_orders": 4,
    "active_safety_orders": 2,
    "price_deviation": 0.5,
    "step_scale": 1.5,
    "volume_scale": 1.2,
    "take_profit": 1.0,
    "take_profit_type": "average",
    "trailing_deviation": None,
    "stop_loss": None,
    "cooldown": 900,
    "max_active_deals": 1,
    "safety_mode": "triggered",
}

SAMPLE_BOTS = [
    # alice and bob enter on the very same condition: one shared evaluation.
    {
        "owner": "alice",
        "name": "ETHBTC RSI dip DCA (triggered safeties)",
        "symbol": "ETHBTC",
        "settings": DCA_SETTINGS,
    },
    {
        "owner": "bob",
        "name": "ETHBTC RSI dip DCA (resting safeties)",
        "symbol": "ETHBTC",
        "settings": {**DCA_SETTINGS, "safety_mode": "resting", "take_profit": 1.5},
    },
    {
        "owner": "carol",
        "name": "LTCBTC oversold DCA with stop loss",
        "symbol": "LTCBTC",
        "settings": {
            **DCA_SETTINGS,
            "entry": {
                "mode": "simple",
                "conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 35}],
            },
            "stop_loss": 3.0,
        },
    },
]


@dataclass
class Loaded:
    users: list[str]
    alerts: list[Alert]
    bots: list[Bot]


@transaction.atomic
def load_sample_data() -> Loaded:
    User = get_user_model()
    usernames = sorted(
        {owner for owner, *_ in SAMPLE_ALERTS} | {bot["owner"] for bot in SAMPLE_BOTS}
    )
    users = {}
    for username in [*usernames, OPERATOR]:
        user, _ = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = username == OPERATOR
        user.set_password(DEMO_PASSWORD)
        user.save()
        users[username] = user

    alerts = []
    for owner, name, symbol, config, action, fire_mode in SAMPLE_ALERTS:
        alert, _ = Alert.objects.update_or_create(
            user=users[owner],
            name=name,
            defaults={
                "symbol": symbol,
                "base_timeframe": "5m",
                "condition_config": config,
                "action": action,
                "fire_mode": fire_mode,
                "status": Alert.Status.ACTIVE,
                "expires_at": None,
                "last_fired_bar": None,
            },
        )
        alerts.append(alert)

    # Bots the sample no longer has (renamed in a later version) go away.
    Bot.objects.filter(user__username__in=usernames).exclude(
        name__in=[b["name"] for b in SAMPLE_BOTS]
    ).delete()
    bots = []
    for sample in SAMPLE_BOTS:
        owner = users[sample["owner"]]
        account, _ = ExchangeAccount.objects.update_or_create(
            user=owner,
            name="Paper",
            defaults={"exchange": "paper", "paper_balances": dict(SAMPLE_PAPER_BALANCES)},
        )
        bot, _ = Bot.objects.update_or_create(
            user=owner,
            name=sample["name"],
            defaults={
                "account": account,
                "kind": Bot.Kind.DCA,
                "symbol": sample["symbol"],
                "base_timeframe": "5m",
                "settings": sample["settings"],
                "status": Bot.Status.RUNNING,
            },
        )
        bots.append(bot)
    return Loaded(users=usernames, alerts=alerts, bots=bots)
