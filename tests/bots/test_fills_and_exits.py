"""Live (stub) Binance deals whose orders trade in parts, whose exits race
their resting orders, and whose cancels get lost: every part is accounted
once; a re-priced take profit or a market exit goes out only once the
orders resting before it are final, for what they did not trade; a cancel
the deal asked for is repeated until it lands and the order is never sent;
an exit is sent once, and a refused one still closes the deal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from bots import deals, orders
from bots.models import Deal, Order
from conditions.marketdata.replay import as_epoch_ms
from conditions.marketdata.stub_orders import COMMISSION
from tests.bots.live import live_bot, stub_exchange

pytestmark = pytest.mark.django_db


@pytest.fixture
def stub():
    with stub_exchange(BINANCE_TIMEOUT_S=2) as running:
        yield running


@pytest.fixture
def resting(stub, django_capture_on_commit_callbacks) -> Deal:
    """An open deal on a live (stub) Binance account, its take profit resting."""
    bot = live_bot(stop_loss=5.0)
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
        place_new(deal)  # the base order, at market
        place_new(deal)  # the take profit it rests
    deal.refresh_from_db()
    assert deal.state == "open" and deal.orders.get(leg="tp1").status == "open"
    return deal


def place_new(deal: Deal) -> None:
    for order in deal.orders.filter(status=Order.Status.NEW).order_by("pk"):
        orders.place_order(order.pk)


def part_of(order: Order) -> Decimal:
    return (order.quantity / 3).quantize(Decimal("0.001"))


def sold_for(quantity: Decimal, price: Decimal) -> Decimal:
    """What a sell of `quantity` at `price` brings on the stub, its fee paid
    (to the money columns' 18 places)."""
    return (quantity * price * (1 - COMMISSION)).quantize(Decimal("1e-18"))


def on_exchange(stub, order: Order) -> Decimal:
    """The limit price the exchange holds: the row's, rounded to the tick."""
    return stub.orders.orders[order.client_order_id].price


def test_a_take_profit_sold_in_part_then_re_priced_rests_again_for_what_is_left(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    part = part_of(tp1)

    # when a third of the take profit trades, and reconciliation looks twice
    stub.orders.fill_partially(tp1.client_order_id, part, stub.now_ms())
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
        orders.reconcile_orders()
    deal.refresh_from_db()
    tp1.refresh_from_db()

    # then the part sold is accounted once, and the deal stays open
    assert (tp1.status, tp1.filled_quantity) == ("partially_filled", part)
    assert deal.state == "open"
    assert deal.quote_received == sold_for(part, on_exchange(stub, tp1))
    fills = deal.events.filter(cause="fill", detail__leg="tp1")
    assert [(e.detail["status"], Decimal(e.detail["quantity"])) for e in fills] == [
        ("partially_filled", part)
    ]

    # when a safety order fills, the take profit is cancelled before any other is sent
    with django_capture_on_commit_callbacks(execute=False):
        deals.on_safety_trigger(deal.pk, 1)
        place_new(deal)
    assert not deal.orders.filter(leg="tp2").exists()
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(tp1.pk)
    deal.refresh_from_db()

    # then the new take profit sells what the deal holds after the part sold
    tp2 = deal.orders.get(leg="tp2")
    assert deal.orders.get(leg="tp1").status == "cancelled"
    assert tp2.quantity == deal.base_bought - part
    assert tp2.price == deal.take_profit_price

    # and when it fills, the deal's P&L counts both sells
    with django_capture_on_commit_callbacks(execute=False):
        place_new(deal)
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-25T00:00:00Z"), start_ms=stub.now_ms(), limit=1000
    )
    stub.set_time(int(candles[candles["high"] >= float(tp2.price)]["open_time"].iloc[1]))
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    deal.refresh_from_db()
    tp2.refresh_from_db()
    assert (deal.state, deal.close_reason) == ("closed", "take_profit")
    sold = tp2.filled_quantity
    assert deal.quote_received == sold_for(part, on_exchange(stub, tp1)) + sold_for(
        sold, on_exchange(stub, tp2)
    )
    assert deal.realized_pnl_quote == deal.quote_received - deal.quote_spent
    assert deal.base_bought - part - sold < Decimal("0.001")  # below a lot: dust


def test_a_stop_loss_waits_for_the_take_profit_to_be_cancelled_and_sells_the_rest(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    part = part_of(tp1)
    stub.orders.fill_partially(tp1.client_order_id, part, stub.now_ms())

    # when the stop loss fires while the take profit rests, part of it sold
    with django_capture_on_commit_callbacks(execute=False):
        closing = deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")

    # then nothing is sold at market until the take profit is cancelled
    assert closing.state == "closing"
    assert not deal.orders.filter(leg="sl").exists()
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(tp1.pk)
        place_new(deal)
    deal.refresh_from_db()
    sell = deal.orders.get(leg="sl")
    # and then everything still held, the part the take profit sold counted
    assert sell.quantity == deal.base_bought - part
    assert (sell.type, sell.status) == ("market", "filled")
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")
    assert deal.quote_received == sold_for(part, on_exchange(stub, tp1)) + sold_for(
        sell.filled_quantity, sell.average_fill_price
    )
    assert stub.orders.orders[tp1.client_order_id].status == "CANCELED"


def test_a_take_profit_that_fills_before_its_cancel_lands_closes_the_deal_with_no_market_sell(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    with django_capture_on_commit_callbacks(execute=False):
        deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")

    # when the market reaches the take profit before its cancel arrives
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-25T00:00:00Z"), start_ms=stub.now_ms(), limit=1000
    )
    stub.set_time(int(candles[candles["high"] >= float(tp1.price)]["open_time"].iloc[1]))
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(tp1.pk)
    deal.refresh_from_db()

    # then the deal closed on its take profit, and nothing more was sold
    assert (deal.state, deal.close_reason) == ("closed", "take_profit")
    assert deal.orders.get(leg="tp1").status == "filled"
    assert not deal.orders.filter(leg="sl").exists()
    assert stub.orders.count(f"tdn-{deal.pk}-sl") == 0


def resting_safety_deal(stub, django_capture_on_commit_callbacks) -> Deal:
    """An open deal whose resting safety order and take profit rest."""
    bot = live_bot(safety_mode="resting")
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
        place_new(deal)
        place_new(deal)
    assert {o.leg: o.status for o in deal.orders.all()} == {
        "base": "filled",
        "so1": "open",
        "tp1": "open",
    }
    return deal


def test_a_closing_deal_sells_what_its_resting_safety_bought_before_its_cancel_landed(
    stub, django_capture_on_commit_callbacks
):
    # given a resting safety order that bought a third of its size
    deal = resting_safety_deal(stub, django_capture_on_commit_callbacks)
    so1 = deal.orders.get(leg="so1")
    part = part_of(so1)
    stub.orders.fill_partially(so1.client_order_id, part, stub.now_ms())
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    deal.refresh_from_db()
    bought = deal.orders.get(leg="base").filled_quantity * (1 - COMMISSION)
    assert deal.base_bought == bought + part * (1 - COMMISSION)

    # when the trader closes the deal, and the safety buys more before its cancel lands
    with django_capture_on_commit_callbacks(execute=False):
        deals.close_deal(deal.pk, Deal.CloseReason.MANUAL, "manual")
        orders.cancel_order(deal.orders.get(leg="tp1").pk)
    assert not deal.orders.filter(leg="close").exists()  # the safety still rests
    stub.orders.fill_partially(so1.client_order_id, part, stub.now_ms())
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(so1.pk)
        place_new(deal)
    deal.refresh_from_db()

    # then the exit sells everything bought, both parts included (to the lot step)
    assert deal.base_bought == bought + 2 * part * (1 - COMMISSION)
    close = deal.orders.get(leg="close")
    assert close.quantity == deal.base_bought
    assert deal.base_bought - close.filled_quantity < Decimal("0.001")
    assert (deal.state, deal.close_reason) == ("closed", "manual")
    assert not deal.events.filter(cause="fill_after_close").exists()


def test_a_part_bought_after_the_take_profit_closed_the_deal_is_on_its_record(
    stub, django_capture_on_commit_callbacks
):
    # given a deal whose take profit the market reaches before its safety order
    deal = resting_safety_deal(stub, django_capture_on_commit_callbacks)
    so1, tp1 = deal.orders.get(leg="so1"), deal.orders.get(leg="tp1")
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-25T00:00:00Z"), start_ms=stub.now_ms(), limit=1000
    )
    touch = candles[candles["high"] >= float(on_exchange(stub, tp1))].index[1]
    assert (candles["low"].loc[:touch] > float(on_exchange(stub, so1))).all()
    stub.set_time(int(candles["open_time"].loc[touch]))
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    deal.refresh_from_db()
    assert (deal.state, deal.close_reason) == ("closed", "take_profit")
    pnl = deal.realized_pnl_quote

    # when the safety order buys part of its size before its cancel lands
    more = part_of(so1)
    stub.orders.fill_partially(so1.client_order_id, more, stub.now_ms())
    orders.cancel_order(so1.pk)

    # then that part is on the deal's record, and its figures stay as closed
    late = deal.events.get(cause="fill_after_close")
    assert (late.detail["leg"], Decimal(late.detail["quantity"])) == ("so1", more)
    assert deal.orders.get(leg="so1").status == "cancelled"
    assert Deal.objects.get(pk=deal.pk).realized_pnl_quote == pnl


def test_a_take_profit_whose_placement_may_still_land_is_not_taken_for_cancelled(
    stub, django_capture_on_commit_callbacks
):
    # given a deal whose take profit a worker sent, its answer lost: not on the
    # exchange (yet), but within the exchange's recvWindow it may still land
    bot = live_bot()
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
        place_new(deal)
        tp1 = deal.orders.get(leg="tp1")
        Order.objects.filter(pk=tp1.pk).update(status="submitted", submitted_at=timezone.now())
        deals.close_deal(deal.pk, Deal.CloseReason.MANUAL, "manual")

    # when its cancel finds nothing, nothing is sold: the cancel is tried again
    with pytest.raises(orders.OutcomeUnknown):
        orders.cancel_order(tp1.pk)
    assert deal.orders.get(leg="tp1").status == "submitted"
    assert not deal.orders.filter(leg="close").exists()

    # then, past the recvWindow, it can no longer land: cancelled, and the deal exits
    past = timezone.now() - timedelta(milliseconds=settings.BINANCE_RECV_WINDOW_MS + 5000)
    Order.objects.filter(pk=tp1.pk).update(submitted_at=past)
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(tp1.pk)
    assert deal.orders.get(leg="tp1").status == "cancelled"
    assert deal.orders.get(leg="close").quantity == Deal.objects.get(pk=deal.pk).base_bought


# --- cancels that must not be lost, exits that must not be doubled ----------------------------


def test_a_closing_deal_whose_cancel_was_lost_is_finished_by_reconciliation(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    # the stop loss fires; its take profit's cancel task never runs (the
    # exchange was down past its retries, or the broker lost it)
    with django_capture_on_commit_callbacks(execute=False):
        deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")

    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()  # cancels the take profit; the exit is written
        orders.reconcile_orders()  # places the exit
    deal.refresh_from_db()

    assert deal.orders.get(leg="tp1").status == "cancelled"
    assert deal.orders.get(leg="sl").status == "filled"
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")


def test_a_take_profit_marked_for_cancel_before_it_went_out_is_never_sent(
    stub, django_capture_on_commit_callbacks
):
    # given a deal whose take profit row is written but not sent yet, when a
    # safety order fills and marks it for cancel (what the decision's
    # after-commit step writes)
    bot = live_bot()
    with django_capture_on_commit_callbacks(execute=False):
        deal = deals.open_deal(bot.pk, "entry-1", stub.now_ms(), "test")
        place_new(deal)  # the base only: tp1 is written, not sent
        deals.on_safety_trigger(deal.pk, 1)
        orders.place_order(deal.orders.get(leg="so1").pk)
    tp1 = deal.orders.get(leg="tp1")
    assert tp1.status == "new" and not deal.orders.filter(leg="tp2").exists()
    Order.objects.filter(pk=tp1.pk).update(cancel_requested_at=timezone.now())

    # when its place_order task runs after all
    with django_capture_on_commit_callbacks(execute=False):
        orders.place_order(tp1.pk)

    # then it is cancelled without being sent, and the re-priced one is written
    assert deal.orders.get(leg="tp1").status == "cancelled"
    assert stub.orders.count(tp1.client_order_id) == 0
    deal.refresh_from_db()
    assert deal.orders.get(leg="tp2").quantity == deal.base_bought


def test_a_take_profit_that_filled_before_its_re_pricing_cancel_leaves_the_rest_to_a_new_one(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    # a safety order fills; the take profit's cancel is on its way...
    with django_capture_on_commit_callbacks(execute=False):
        deals.on_safety_trigger(deal.pk, 1)
        orders.place_order(deal.orders.get(leg="so1").pk)
    # ...when the market reaches the old take profit
    candles = stub.market.klines(
        "ETHBTC", "5m", as_epoch_ms("2018-01-25T00:00:00Z"), start_ms=stub.now_ms(), limit=1000
    )
    stub.set_time(int(candles[candles["high"] >= float(tp1.price)]["open_time"].iloc[1]))
    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(tp1.pk)  # finds it filled
    deal.refresh_from_db()

    # then the deal stays open: what the safety bought rests in a new take profit
    tp1.refresh_from_db()
    assert tp1.status == "filled" and deal.state == "open"
    tp2 = deal.orders.get(leg="tp2")
    so1 = deal.orders.get(leg="so1")
    assert tp2.quantity == deal.base_bought - tp1.filled_quantity
    assert tp2.quantity >= so1.filled_quantity - so1.fee
    assert deal.events.filter(cause="take_profit_short").count() == 1


def test_an_exit_already_out_is_not_sent_again_when_the_take_profit_is_cancelled(
    stub, resting, django_capture_on_commit_callbacks
):
    # a deal closed by the release before this one: exit and cancel sent together
    deal = resting
    with django_capture_on_commit_callbacks(execute=False):
        deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")
        deals.new_order(deal, "sl", "sell", "market", quantity=deal.base_bought)

    with django_capture_on_commit_callbacks(execute=False):
        orders.cancel_order(deal.orders.get(leg="tp1").pk)
        place_new(deal)
    deal.refresh_from_db()

    assert deal.orders.filter(side="sell", type="market").count() == 1
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")


def test_a_cancel_never_overrides_a_worker_that_claimed_the_order_meanwhile(stub, resting):
    tp1 = resting.orders.get(leg="tp1")
    Order.objects.filter(pk=tp1.pk).update(status="submitted", submitted_at=timezone.now())
    seen = Order.objects.get(pk=tp1.pk)
    # a place_order retry claims it again (a new submitted_at) and sends it
    Order.objects.filter(pk=tp1.pk).update(submitted_at=timezone.now() + timedelta(seconds=1))

    assert orders._cancel_unsent(seen) is False
    assert Order.objects.get(pk=tp1.pk).status == "submitted"


def test_a_safety_buy_decided_before_the_close_is_never_sent_after_it(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    # the safety level and the stop loss fire on the same bar: the safety's
    # market buy is written, not sent yet, when the deal starts closing
    with django_capture_on_commit_callbacks(execute=False):
        deals.on_safety_trigger(deal.pk, 1)
        deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")
        orders.place_order(deal.orders.get(leg="so1").pk)
        orders.cancel_order(deal.orders.get(leg="tp1").pk)
        place_new(deal)
    deal.refresh_from_db()

    assert deal.orders.get(leg="so1").status == "cancelled"
    assert stub.orders.count(f"tdn-{deal.pk}-so1") == 0
    assert deal.orders.get(leg="sl").quantity == deal.base_bought
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")


def test_an_exit_refused_for_dust_closes_the_deal_with_what_is_left_on_record(
    stub, resting, django_capture_on_commit_callbacks
):
    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    # the take profit sold all but one lot, worth less than the minimum order
    left = Decimal("0.001")
    stub.orders.fill_partially(tp1.client_order_id, tp1.quantity.quantize(left) - left, 0)
    with django_capture_on_commit_callbacks(execute=False):
        deals.close_deal(deal.pk, Deal.CloseReason.STOP_LOSS, "stop_loss")
        orders.cancel_order(tp1.pk)
        place_new(deal)
    deal.refresh_from_db()

    assert deal.orders.get(leg="sl").status == "rejected"
    assert (deal.state, deal.close_reason) == ("closed", "stop_loss")
    refused = deal.events.get(cause="exit_refused")
    assert (
        Decimal(refused.detail["held"])
        == deal.base_bought - deal.orders.get(leg="tp1").filled_quantity
    )
    assert "NOTIONAL" in refused.detail["error"]


def test_reconciliation_asks_for_resting_orders_by_symbol_and_looks_up_only_what_moved(
    stub, resting, django_capture_on_commit_callbacks
):
    resting_safety_deal(stub, django_capture_on_commit_callbacks)  # another account's two
    stub.clear_request_log()

    # when nothing moved, one openOrders request per account and symbol, no lookup
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    assert stub.request_count("/api/v3/openOrders") == 2
    assert stub.request_count("/api/v3/order") == 0

    # when one order trades in part, only it is looked up (its fee is in its trades)
    tp1 = resting.orders.get(leg="tp1")
    stub.orders.fill_partially(tp1.client_order_id, part_of(tp1), stub.now_ms())
    with django_capture_on_commit_callbacks(execute=False):
        orders.reconcile_orders()
    lookups = [r.params["origClientOrderId"] for r in stub.request_log("/api/v3/order")]
    assert lookups == [tp1.client_order_id]
    tp1.refresh_from_db()
    assert tp1.status == "partially_filled" and tp1.fee > 0


def test_reconciliation_sees_every_resting_order_however_many_rest(
    stub, resting, django_capture_on_commit_callbacks
):
    resting_safety_deal(stub, django_capture_on_commit_callbacks)
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(3):
            orders.reconcile_orders(limit=1)
    looked = Order.objects.filter(status="open", type="limit", updated_at__gt=before)
    assert looked.count() == Order.objects.filter(status="open", type="limit").count() == 3


def test_a_take_profit_the_exchange_ended_by_itself_is_not_placed_again(
    stub, resting, django_capture_on_commit_callbacks
):
    from bots.exchanges.base import OrderState

    deal = resting
    tp1 = deal.orders.get(leg="tp1")
    # the exchange expires it (self-trade prevention, say): no cancel was asked
    with django_capture_on_commit_callbacks(execute=False):
        orders.apply_state(
            tp1.pk, OrderState(tp1.client_order_id, tp1.exchange_order_id, "cancelled")
        )
    deal.refresh_from_db()

    assert deal.state == "open"
    assert not deal.orders.filter(leg="tp2").exists()
    assert deal.events.filter(cause="take_profit_ended_by_exchange").count() == 1
