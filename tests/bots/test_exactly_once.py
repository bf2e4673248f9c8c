"""Orders are never placed twice and never lost, whatever happens to the
answer: each case ends with exactly one order on the exchange for the row."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from bots import deals, orders, tasks
from bots.models import Order
from tests.bots.live import live_bot, stub_exchange

RECV_WINDOW_MS = 1000


@pytest.fixture
def stub():
    with stub_exchange(BINANCE_TIMEOUT_S=0.5, BINANCE_RECV_WINDOW_MS=RECV_WINDOW_MS) as running:
        yield running


@pytest.fixture
def base_order(stub, django_capture_on_commit_callbacks) -> Order:
    """A live (stub) Binance bot's deal with its base order row, not yet sent."""
    bot = live_bot()
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
    return deal.orders.get(leg="base")


def place(order: Order, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        orders.place_order(order.pk)
    order.refresh_from_db()


@pytest.mark.django_db
def test_a_lost_answer_whose_order_arrived_is_found_not_placed_again(
    stub, base_order, django_capture_on_commit_callbacks
):
    # given the exchange takes the order but the connection drops before the answer
    stub.inject_fault("accept_drop", path="/api/v3/order")
    # when the order is placed
    place(base_order, django_capture_on_commit_callbacks)
    # then it is looked up by its client id and recorded, once
    assert base_order.status == "filled"
    assert stub.orders.count(base_order.client_order_id) == 1
    base_order.deal.refresh_from_db()
    assert base_order.deal.state == "open"


def sent_into_a_hang(stub, order: Order, django_capture_on_commit_callbacks) -> None:
    """The order sent to an exchange that takes it but answers after our
    timeout (within its recvWindow): its outcome is unknown to us."""
    stub.inject_fault("hang", path="/api/v3/order", seconds=0.8)
    with pytest.raises(orders.OutcomeUnknown):
        place(order, django_capture_on_commit_callbacks)


@pytest.mark.django_db
def test_a_slow_order_that_lands_after_the_timeout_is_found_on_retry(
    stub, base_order, django_capture_on_commit_callbacks
):
    # given the exchange answers after our timeout, but within its recvWindow
    # when the first attempt times out, the outcome is unknown: no second order yet
    sent_into_a_hang(stub, base_order, django_capture_on_commit_callbacks)
    assert Order.objects.get(pk=base_order.pk).status == "submitted"
    # and a retry before the recvWindow has passed does not send again
    stub_orders_before = stub.request_count("/api/v3/order")
    time.sleep(0.5)
    place(base_order, django_capture_on_commit_callbacks)
    # then the order that landed meanwhile is found and recorded
    assert base_order.status == "filled"
    assert stub.orders.count(base_order.client_order_id) == 1
    posts = [r for r in stub.request_log("/api/v3/order") if r.method == "POST"]
    assert len(posts) == 1, "never sent twice"
    assert stub.request_count("/api/v3/order") > stub_orders_before  # it did look


@pytest.mark.django_db
def test_an_order_that_landed_is_recorded_even_if_our_checks_would_refuse_it_now(
    stub, base_order, django_capture_on_commit_callbacks
):
    # given a base order sent, its answer lost, that landed on the exchange
    sent_into_a_hang(stub, base_order, django_capture_on_commit_callbacks)
    time.sleep(0.5)
    # and the row now below what our own checks would send (the filters changed, say)
    Order.objects.filter(pk=base_order.pk).update(quote_amount="0.00001")

    # when it is retried, it is looked up before anything is checked
    place(base_order, django_capture_on_commit_callbacks)

    # then it is recorded filled and the deal opens, instead of failing while holding base
    assert base_order.status == "filled"
    base_order.deal.refresh_from_db()
    assert base_order.deal.state == "open"


@pytest.mark.django_db
def test_an_order_refused_for_arriving_too_late_is_placed_again_only_after_the_window(
    stub, base_order, django_capture_on_commit_callbacks
):
    # given the request hangs longer than the exchange's recvWindow: it will be refused
    stub.inject_fault("hang", path="/api/v3/order", seconds=RECV_WINDOW_MS / 1000 + 0.5)
    with pytest.raises(orders.OutcomeUnknown):
        place(base_order, django_capture_on_commit_callbacks)
    # when retried while the first request could still land, nothing is sent
    with pytest.raises(orders.OutcomeUnknown):
        place(base_order, django_capture_on_commit_callbacks)
    assert stub.orders.count(base_order.client_order_id) == 0
    # then once the window (and the margin) has passed, it is placed, once
    time.sleep(orders.retry_delay_s())
    place(base_order, django_capture_on_commit_callbacks)
    assert base_order.status == "filled"
    assert stub.orders.count(base_order.client_order_id) == 1


@pytest.mark.django_db
def test_a_duplicate_reply_means_the_order_exists(
    stub, base_order, django_capture_on_commit_callbacks
):
    # given a resting take-profit order already on the exchange, its row never updated
    # (Binance answers "duplicate" only while an order with that id is open)
    from decimal import Decimal

    from bots.exchanges import exchange_for

    tp = Order.objects.create(
        deal=base_order.deal, leg="tp1", side="sell", type="limit", price=Decimal("0.2"),
        quantity=Decimal("0.1"), client_order_id=f"tdn-{base_order.deal_id}-tp1",
    )  # fmt: skip
    exchange = exchange_for(base_order.deal.bot.account)
    exchange.place_order(orders.build_request(tp, exchange))
    # when the row is placed, the exchange says duplicate
    place(tp, django_capture_on_commit_callbacks)
    # then the existing order is recorded, and there is still only one
    assert tp.status == "open" and tp.exchange_order_id
    assert stub.orders.count(tp.client_order_id) == 1


@pytest.mark.django_db(transaction=True)
def test_two_tasks_placing_one_row_at_once_send_it_once(stub, base_order):
    # given a slow exchange, so that both tasks are in flight together
    import threading

    from django.db import connection

    stub.inject_fault("hang", path="/api/v3/order", seconds=0.3)
    outcomes, barrier = [], threading.Barrier(2)

    def task():
        barrier.wait()
        try:
            orders.place_order(base_order.pk)
            outcomes.append("placed")
        except orders.OutcomeUnknown:
            outcomes.append("unknown")
        finally:
            connection.close()

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then one POST reached the exchange; the other task backed off to retry later
    posts = [r for r in stub.request_log("/api/v3/order") if r.method == "POST"]
    assert len(posts) == 1
    assert sorted(outcomes) == ["placed", "unknown"]
    assert Order.objects.get(pk=base_order.pk).status == "filled"


@pytest.mark.django_db
def test_rate_limits_are_honoured_without_sending(
    stub, base_order, django_capture_on_commit_callbacks
):
    from bots.exchanges.base import ExchangeRateLimited

    stub.inject_fault("429", path="/api/v3/order", retry_after=3)
    with pytest.raises(ExchangeRateLimited) as limited:
        place(base_order, django_capture_on_commit_callbacks)
    assert limited.value.retry_after_s == 3
    assert stub.orders.count(base_order.client_order_id) == 0


@pytest.mark.django_db
def test_an_order_below_the_minimum_is_refused_with_a_reason_and_never_sent(
    stub, django_capture_on_commit_callbacks
):
    bot = live_bot(base_order_size="0.00001")
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
    order = deal.orders.get()
    place(order, django_capture_on_commit_callbacks)
    assert order.status == "rejected" and "minimum notional" in order.error
    assert stub.request_count("/api/v3/order") == 0
    deal.refresh_from_db()
    assert (deal.state, deal.close_reason) == ("closed", "failed")


@pytest.mark.django_db
def test_beat_reconciliation_leaves_a_fresh_order_to_its_task_and_places_a_forgotten_one_once(
    stub, base_order, django_capture_on_commit_callbacks, settings
):
    settings.ORDER_SETTLE_S = 30

    def reconcile() -> int:
        with django_capture_on_commit_callbacks(execute=False):
            touched = tasks.reconcile_orders()
        base_order.refresh_from_db()
        return touched

    # while the order's own place_order task is on its way, beat leaves it alone
    reconcile()
    assert base_order.status == "new"
    assert stub.orders.count(base_order.client_order_id) == 0

    # the task was lost; a run that finds another under way still does nothing
    Order.objects.filter(pk=base_order.pk).update(updated_at=timezone.now() - timedelta(minutes=1))
    cache.add(tasks.RECONCILE_LOCK, 1)
    try:
        assert reconcile() == 0
    finally:
        cache.delete(tasks.RECONCILE_LOCK)
    assert stub.orders.count(base_order.client_order_id) == 0

    # the next run places it, once
    assert reconcile() == 1
    assert base_order.status == "filled"
    assert stub.orders.count(base_order.client_order_id) == 1
    assert reconcile() == 0
    assert stub.orders.count(base_order.client_order_id) == 1
