"""Real Celery workers, real PostgreSQL and Redis, the stub as Binance: a
worker killed mid-order and a connection dropped after the exchange took the
order end with exactly one exchange order per row; two workers racing on one
trigger open one deal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bots import deals
from bots.models import Deal, Order
from bots.services import subscribe_entry
from conditions.models import ConditionSubscription, ConditionTrigger
from tests.bots.live import live_bot
from tests.factories import DCA_SETTINGS
from tests.pipeline.conftest import BAR_12_00, wait_until

pytestmark = pytest.mark.worker

RSI_ENTRY = {
    "mode": "simple",
    "conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}],
}
SETTINGS = {**DCA_SETTINGS, "max_active_deals": 3}


def binance_bot(**settings):
    return live_bot(**{**SETTINGS, **settings})


def base_order_row(bot, stub, django_capture_on_commit_callbacks) -> Order:
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
    return deal.orders.get(leg="base")


def posts(stub, client_order_id: str) -> int:
    """POSTs of one order (the deal goes on to place its take profit meanwhile)."""
    return sum(
        1
        for request in stub.request_log("/api/v3/order")
        if request.method == "POST" and request.params.get("newClientOrderId") == client_order_id
    )


@pytest.mark.parametrize(
    ("hang_s", "recv_window_ms", "story"),
    [
        (1.5, 5000, "the hung request lands: found by lookup"),
        (3.0, 1000, "the hung request is refused: placed again, once"),
    ],
)
def test_a_worker_killed_while_placing_an_order_leaves_exactly_one_order(
    processes, stub, django_capture_on_commit_callbacks, hang_s, recv_window_ms, story
):
    # given a live (stub) Binance bot's base order and an exchange slow to answer
    processes.env["BINANCE_RECV_WINDOW_MS"] = str(recv_window_ms)
    processes.env["BINANCE_TIMEOUT_S"] = "10"
    order = base_order_row(binance_bot(), stub, django_capture_on_commit_callbacks)
    stub.inject_fault("hang", path="/api/v3/order", seconds=hang_s)
    processes.start_worker("w1")
    processes.send("bots.tasks.place_order", order.pk)

    # when the worker is killed while its request is at the exchange
    wait_until(
        lambda: posts(stub, order.client_order_id) == 1,
        30,
        "the order request to reach the exchange",
        processes.logs,
    )
    processes.kill("w1")
    assert Order.objects.get(pk=order.pk).status == "submitted"

    # then another worker, reconciling at start and taking the unacknowledged task,
    # brings the row to the truth with one order on the exchange
    processes.start_worker("w2")
    processes.restore_unacked()
    wait_until(
        lambda: Order.objects.get(pk=order.pk).status == "filled",
        45,
        f"the order to be filled ({story})",
        processes.logs,
    )
    assert stub.orders.count(order.client_order_id) == 1, story
    deal = Deal.objects.get(pk=order.deal_id)
    wait_until(
        lambda: Deal.objects.get(pk=deal.pk).state == "open", 20, "the deal to open", processes.logs
    )


def test_a_connection_dropped_after_the_exchange_took_the_order_is_resolved_by_lookup(
    processes, stub, django_capture_on_commit_callbacks
):
    order = base_order_row(binance_bot(), stub, django_capture_on_commit_callbacks)
    stub.inject_fault("accept_drop", path="/api/v3/order")
    processes.start_worker("w1")
    processes.send("bots.tasks.place_order", order.pk)
    wait_until(
        lambda: Order.objects.get(pk=order.pk).status == "filled",
        30,
        "the order to be filled",
        processes.logs,
    )
    assert stub.orders.count(order.client_order_id) == 1
    assert posts(stub, order.client_order_id) == 1
    # and the deal carries on: its take profit rests on the exchange
    wait_until(
        lambda: Order.objects.filter(deal_id=order.deal_id, leg="tp1", status="open").exists(),
        30,
        "the take profit to rest on the exchange",
        processes.logs,
    )


def test_two_workers_racing_on_the_same_entry_trigger_open_one_deal(processes, stub):
    # given a bot subscribed to its entry condition, and that condition's trigger
    bot = binance_bot(entry=RSI_ENTRY)
    subscribe_entry(bot)
    subscription = ConditionSubscription.objects.get(bot=bot, active=True)
    trigger = ConditionTrigger.objects.create(
        condition=subscription.condition,
        symbol="ETHBTC",
        timeframe="5m",
        candle_time=datetime.fromtimestamp((BAR_12_00 - 300_000) / 1000, tz=UTC),
        subscribers_count=1,
    )
    processes.start_worker("w1")
    processes.start_worker("w2")
    # when the bot action is delivered several times to two workers at once
    for _ in range(4):
        processes.send("bots.tasks.bot_action", subscription.pk, trigger.pk)
    # then one deal opens, and its base order reaches the exchange once
    wait_until(
        lambda: Order.objects.filter(deal__bot=bot, leg="base", status="filled").exists(),
        30,
        "the base order",
        processes.logs,
    )
    assert Deal.objects.filter(bot=bot).count() == 1
    assert Order.objects.filter(deal__bot=bot, leg="base").count() == 1
    base = Order.objects.get(deal__bot=bot, leg="base")
    assert stub.orders.count(base.client_order_id) == 1
