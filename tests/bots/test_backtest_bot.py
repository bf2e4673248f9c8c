"""The bot backtest (BOTS.md "Bot backtest"): every fill rule, checked against
what the candles themselves say, on real Binance klines and on small
hand-made series for the cases real data does not pin down."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from bots.dca import BotSettingsError
from bots.simulate import backtest_bot
from conditions.engine.backtest import CandleSet, run_backtest
from conditions.engine.candles import load_candles
from conditions.engine.errors import ConditionError
from tests.conftest import KLINES_DIR, manage

D = Decimal
FEE = D("0.001")
FIVE_MINUTES_MS = 300_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Candles:
    """A candle frame as the test reads it: prices as Decimal(str(float))."""

    frame: pd.DataFrame
    times: list[int]
    open: list[Decimal]
    high: list[Decimal]
    low: list[Decimal]
    close: list[Decimal]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Candles:
        def column(name: str) -> list[Decimal]:
            return [D(str(value)) for value in frame[name].tolist()]

        return cls(
            frame,
            [int(t) for t in frame["open_time"]],
            column("open"),
            column("high"),
            column("low"),
            column("close"),
        )

    def first(self, start: int, holds) -> int | None:
        """The first bar at or after `start` for which holds(bar) is true."""
        return next((bar for bar in range(start, len(self.times)) if holds(bar)), None)


@pytest.fixture(scope="module")
def ethbtc() -> Candles:
    return Candles.of(load_candles(KLINES_DIR / "ETHBTC-5m.csv"))


def backtest(candles: Candles, **bot) -> dict:
    document = {"symbol": "ETHBTC", "base_timeframe": "5m", **bot}
    return backtest_bot(document, [CandleSet("ETHBTC", "5m", candles.frame)])


def hand_made(*bars: tuple[str, str, str, str]) -> Candles:
    """Bars of (open, high, low, close), five minutes apart."""
    start = 1_699_999_800_000
    return Candles.of(
        pd.DataFrame(
            {
                "open_time": [start + i * FIVE_MINUTES_MS for i in range(len(bars))],
                "open": [float(bar[0]) for bar in bars],
                "high": [float(bar[1]) for bar in bars],
                "low": [float(bar[2]) for bar in bars],
                "close": [float(bar[3]) for bar in bars],
                "volume": [1.0] * len(bars),
            }
        )
    )


def legs(deal: dict) -> list[tuple[str, Decimal, str]]:
    return [(o["leg"], D(o["price"]), o["filled_at"]) for o in deal["orders"]]


def net_base(quote: Decimal, price: Decimal) -> Decimal:
    """What a market buy of `quote` at `price` leaves after the fee."""
    quantity = quote / price
    return quantity - quantity * FEE


# --- real klines: entries and exits -------------------------------------------------------
def test_the_base_order_fills_at_the_close_of_the_entry_bar_with_the_fee_in_base(ethbtc):
    document = backtest(ethbtc, base_order_size="0.01", take_profit=1)

    base = document["deals"][0]["orders"][0]

    quantity = D("0.01") / ethbtc.close[0]
    assert document["deals"][0]["opened_at"] == iso(ethbtc.times[0])
    assert (base["leg"], base["side"], D(base["price"])) == ("base", "buy", ethbtc.close[0])
    assert (D(base["quantity"]), D(base["quote"])) == (quantity, D("0.01"))
    assert D(base["fee"]) == quantity * FEE
    assert base["filled_at"] == iso(ethbtc.times[0])


def test_each_take_profit_sells_at_its_price_in_the_first_later_bar_whose_high_reaches_it(
    ethbtc,
):
    # given a bot with no safety orders that re-enters as soon as it can
    document = backtest(ethbtc, base_order_size="0.01", take_profit="0.8")

    # then each deal, opened at a close, sells at avg * 1.008 in the first later
    # bar whose high reaches it, and the next deal opens at that bar's close
    expected, bar = [], 0
    while bar is not None:
        held = net_base(D("0.01"), ethbtc.close[bar])
        target = D("0.01") / held * (1 + D("0.8") / 100)
        closed = ethbtc.first(bar + 1, lambda k, target=target: ethbtc.high[k] >= target)
        expected.append((bar, closed, held, target))
        bar = closed
    assert len(expected) >= 5
    assert len(document["deals"]) == len(expected)
    for deal, (opened, closed, held, target) in zip(document["deals"], expected, strict=True):
        assert deal["opened_at"] == iso(ethbtc.times[opened])
        if closed is None:
            assert deal["closed_at"] is None and deal["pnl_quote"] is None
            continue
        sell = deal["orders"][-1]
        assert (deal["closed_at"], deal["close_reason"]) == (
            iso(ethbtc.times[closed]),
            "take_profit",
        )
        assert (sell["leg"], sell["side"], D(sell["price"])) == ("tp", "sell", target)
        assert D(sell["quantity"]) == held
        assert D(sell["fee"]) == D(sell["quote"]) * FEE
        assert D(deal["pnl_quote"]) == D(sell["quote"]) - D(sell["fee"]) - D("0.01")


def test_a_stop_loss_sells_at_the_close_of_the_first_bar_that_closes_at_or_below_it(ethbtc):
    document = backtest(ethbtc, base_order_size="0.01", take_profit=1000, stop_loss=2)

    expected, bar = [], 0
    while bar is not None:
        held = net_base(D("0.01"), ethbtc.close[bar])
        stop = D("0.01") / held * (1 - D(2) / 100)
        closed = ethbtc.first(bar + 1, lambda k, stop=stop: ethbtc.close[k] <= stop)
        expected.append((bar, closed))
        bar = closed
    assert len(expected) >= 3
    for deal, (opened, closed) in zip(document["deals"], expected, strict=True):
        assert deal["opened_at"] == iso(ethbtc.times[opened])
        if closed is not None:
            assert deal["close_reason"] == "stop_loss"
            assert deal["closed_at"] == iso(ethbtc.times[closed])
            assert legs(deal)[-1] == ("sl", ethbtc.close[closed], iso(ethbtc.times[closed]))
            assert D(deal["pnl_quote"]) < 0


def test_a_trailing_take_profit_exits_at_the_first_close_that_falls_back_from_the_high(ethbtc):
    document = backtest(ethbtc, base_order_size="0.01", take_profit="0.6", trailing_deviation="0.3")

    expected, bar = [], 0
    while bar is not None:
        target = D("0.01") / net_base(D("0.01"), ethbtc.close[bar]) * (1 + D("0.6") / 100)
        started = ethbtc.first(bar + 1, lambda k, target=target: ethbtc.high[k] >= target)
        exit_bar = None
        if started is not None:
            top = ethbtc.high[started]
            for k in range(started, len(ethbtc.times)):
                top = max(top, ethbtc.high[k])
                if ethbtc.close[k] <= top * (1 - D("0.3") / 100):
                    exit_bar = k
                    break
        expected.append((bar, exit_bar))
        bar = exit_bar
    assert len(expected) >= 5
    for deal, (opened, closed) in zip(document["deals"], expected, strict=True):
        assert deal["opened_at"] == iso(ethbtc.times[opened])
        if closed is not None:
            assert deal["close_reason"] == "take_profit"
            assert legs(deal)[-1] == ("tp", ethbtc.close[closed], iso(ethbtc.times[closed]))


def test_the_cooldown_counts_from_the_open_of_the_bar_where_the_last_deal_closed(ethbtc):
    document = backtest(ethbtc, base_order_size="0.01", take_profit="0.5", cooldown=1800)

    deals = document["deals"]
    assert len(deals) > 5
    for previous, deal in pairwise(deals):
        closed_ms = ethbtc.times[[iso(t) for t in ethbtc.times].index(previous["closed_at"])]
        allowed = ethbtc.first(0, lambda k, c=closed_ms: ethbtc.times[k] - c >= 1_800_000)
        # asap: the first bar the cooldown allows, not a bar later
        assert deal["opened_at"] == iso(ethbtc.times[allowed])


def test_an_entry_playbook_opens_deals_only_at_bars_where_it_fires(ethbtc):
    # given an RSI entry, and the bars where the alert backtest sees it fire
    entry = {"mode": "simple", "conditions": [{"indicator": "RSI", "operator": "<", "value": 30}]}
    alert = {"symbol": "ETHBTC", "base_timeframe": "5m", "conditionConfig": entry}
    sets = [CandleSet("ETHBTC", "5m", ethbtc.frame)]
    fired = [
        int(datetime.strptime(t["bar_open_time"], "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
        for t in run_backtest(alert, sets)["triggers"]
    ]

    # when the bot runs with that entry and a 15 minute cooldown
    document = backtest(ethbtc, entry=entry, base_order_size="0.01", take_profit=1, cooldown=900)

    # then each deal opens at the first firing bar the previous deal and the cooldown allow
    deals = document["deals"]
    assert len(deals) >= 5
    expected_open = fired[0]
    for deal in deals:
        assert deal["opened_at"] == iso(expected_open)
        if deal["closed_at"] is None:
            break
        closed_ms = int(datetime.fromisoformat(deal["closed_at"]).timestamp() * 1000)
        expected_open = next(t for t in fired if t >= closed_ms and t - closed_ms >= 900_000)


# --- real klines: safety orders -----------------------------------------------------------
LADDER = {
    "base_order_size": "0.01",
    "safety_order_size": "0.005",
    "max_safety_orders": 4,
    "price_deviation": 2,
    "step_scale": "1.5",
    "volume_scale": "1.2",
    "take_profit": 1000,  # never reached: the deal stays open to show its whole ladder
}


def ladder_prices(base_price: Decimal) -> list[tuple[Decimal, Decimal]]:
    """BOTS.md's closed form for LADDER: (price_n, size_n)."""
    d, s, v = D(2), D("1.5"), D("1.2")
    return [
        (base_price * (1 - d * (1 - s**n) / (1 - s) / 100), D("0.005") * v ** (n - 1))
        for n in range(1, 5)
    ]


def test_a_triggered_safety_order_fills_at_the_close_that_crosses_below_its_level(ethbtc):
    document = backtest(ethbtc, **LADDER, safety_mode="triggered")

    deal = document["deals"][0]
    expected = []
    for n, (price, size) in enumerate(ladder_prices(ethbtc.close[0]), start=1):
        bar = ethbtc.first(1, lambda k, p=price: ethbtc.close[k] < p <= ethbtc.close[k - 1])
        if bar is not None:
            expected.append((f"so{n}", ethbtc.close[bar], iso(ethbtc.times[bar]), size))
    assert len(expected) >= 3
    assert [
        (*leg, D(o["quote"])) for leg, o in zip(legs(deal)[1:], deal["orders"][1:], strict=True)
    ] == (expected)
    assert deal["closed_at"] is None and deal["close_reason"] is None
    assert document["summary"]["max_safety_orders_used"] == len(expected)


def test_resting_safety_orders_fill_at_their_own_price_when_a_low_reaches_them(ethbtc):
    document = backtest(ethbtc, **LADDER, safety_mode="resting", active_safety_orders=4)

    deal = document["deals"][0]
    expected = []
    for n, (price, _size) in enumerate(ladder_prices(ethbtc.close[0]), start=1):
        bar = ethbtc.first(1, lambda k, p=price: ethbtc.low[k] <= p)
        if bar is not None:
            expected.append((f"so{n}", price, iso(ethbtc.times[bar])))
    assert len(expected) >= 3
    assert legs(deal)[1:] == expected
    # orders past the last filled level do not exist: zip stops there
    for order, (price, size) in zip(
        deal["orders"][1:], ladder_prices(ethbtc.close[0]), strict=False
    ):
        assert D(order["quantity"]) == size / price  # sized in base when placed
        assert D(order["fee"]) == D(order["quantity"]) * FEE


def test_the_next_resting_level_is_placed_at_the_close_and_fills_from_the_next_bar(ethbtc):
    # given levels 1% apart; bar 5 of the file reaches the first three at once
    bot = {**LADDER, "max_safety_orders": 3, "price_deviation": 1, "step_scale": 1}
    prices = [ethbtc.close[0] * (1 - D(n) / 100) for n in (1, 2, 3)]
    assert {ethbtc.first(1, lambda k, p=p: ethbtc.low[k] <= p) for p in prices} == {5}

    # when only one level rests at a time
    document = backtest(ethbtc, **bot, safety_mode="resting", active_safety_orders=1)

    # then each level can only fill after the bar in which the one before it filled
    expected, after = [], 0
    for n, price in enumerate(prices, start=1):
        bar = ethbtc.first(after + 1, lambda k, p=price: ethbtc.low[k] <= p)
        expected.append((f"so{n}", price, iso(ethbtc.times[bar])))
        after = bar
    assert legs(document["deals"][0])[1:] == expected
    assert expected[0][2] != expected[1][2]


# --- real klines: the numbers add up ------------------------------------------------------
def test_fees_pnl_and_the_summary_add_up_over_a_busy_bot(ethbtc):
    document = backtest(
        ethbtc,
        **{**LADDER, "take_profit": "1.2"},
        safety_mode="resting",
        active_safety_orders=2,
        stop_loss=8,
        max_active_deals=2,
    )

    deals = document["deals"]
    closed = [deal for deal in deals if deal["closed_at"] is not None]
    assert len(closed) > 10
    assert {deal["close_reason"] for deal in closed} <= {"take_profit", "stop_loss"}
    for deal in closed:
        buys = [o for o in deal["orders"] if o["side"] == "buy"]
        (sell,) = [o for o in deal["orders"] if o["side"] == "sell"]
        spent = sum(D(o["quote"]) for o in buys)
        for order in buys:
            assert D(order["fee"]) == D(order["quantity"]) * FEE
        assert D(sell["quantity"]) == sum(D(o["quantity"]) - D(o["fee"]) for o in buys)
        assert D(sell["quote"]) == D(sell["quantity"]) * D(sell["price"])
        assert D(sell["fee"]) == D(sell["quote"]) * FEE
        pnl = D(sell["quote"]) - D(sell["fee"]) - spent
        assert D(deal["pnl_quote"]) == pnl
        assert abs(D(deal["pnl_pct"]) - pnl / spent * 100) < D("1e-20")
    summary = document["summary"]
    assert summary["deals"] == len(deals)
    assert summary["wins"] == sum(1 for deal in closed if D(deal["pnl_quote"]) > 0)
    assert D(summary["pnl_quote"]) == sum(D(deal["pnl_quote"]) for deal in closed)
    assert summary["max_safety_orders_used"] == max(
        sum(1 for o in deal["orders"] if o["leg"].startswith("so")) for deal in deals
    )
    # never more than two deals at once, and at most one new deal per bar
    opens = [deal["opened_at"] for deal in deals]
    assert len(set(opens)) == len(opens)
    for deal in deals:
        overlapping = [
            other
            for other in deals
            if other["opened_at"] <= deal["opened_at"]
            and (other["closed_at"] is None or other["closed_at"] > deal["opened_at"])
        ]
        assert len(overlapping) <= 2


def test_with_one_triggered_deal_at_a_time_the_quote_committed_is_the_most_one_deal_spent(
    ethbtc,
):
    document = backtest(ethbtc, **{**LADDER, "take_profit": "1.5"}, safety_mode="triggered")

    spent = [
        sum(D(o["quote"]) for o in deal["orders"] if o["side"] == "buy")
        for deal in document["deals"]
    ]
    assert D(document["summary"]["max_quote_committed"]) == max(spent)
    assert max(spent) > D("0.01")  # some deal did use its safety orders


# --- hand-made bars: what real data does not pin down -------------------------------------
FLAT = ("100", "100", "100", "100")
PLAIN = {"base_order_size": 100, "take_profit": 50, "fee_rate": 0}
LADDER_93 = {  # levels at 99 (10), 97 (20), 93 (40) below a base fill of 100
    **PLAIN,
    "safety_order_size": 10,
    "max_safety_orders": 3,
    "price_deviation": 1,
    "step_scale": 2,
    "volume_scale": 2,
}


def test_a_take_profit_placed_at_the_entry_close_cannot_fill_in_the_entry_bar():
    # the entry bar's high (105) came before its close, where the deal opened
    bars = hand_made(
        ("100", "105", "99", "100"), ("100", "100.5", "99.5", "100"), ("100", "101", "100", "100.5")
    )

    deal = backtest(bars, **{**PLAIN, "take_profit": 1})["deals"][0]

    assert legs(deal) == [("base", D(100), iso(bars.times[0])), ("tp", D(101), iso(bars.times[2]))]


def test_one_bar_closing_below_several_levels_fills_them_all_at_that_close():
    bars = hand_made(FLAT, ("100", "100", "91", "92"))

    deal = backtest(bars, **LADDER_93)["deals"][0]

    at = iso(bars.times[1])
    assert [(leg, price, when) for leg, price, when in legs(deal)[1:]] == [
        ("so1", D(92), at),
        ("so2", D(92), at),
        ("so3", D(92), at),
    ]
    assert [D(o["quote"]) for o in deal["orders"][1:]] == [D(10), D(20), D(40)]


def test_one_bar_whose_low_reaches_several_resting_levels_fills_each_at_its_price():
    bars = hand_made(FLAT, ("100", "100", "92", "94"))

    deal = backtest(bars, **LADDER_93, safety_mode="resting", active_safety_orders=3)["deals"][0]

    at = iso(bars.times[1])
    assert legs(deal)[1:] == [("so1", D(99), at), ("so2", D(97), at), ("so3", D(93), at)]


def test_a_close_exactly_at_a_level_does_not_cross_below_it():
    bars = hand_made(FLAT, ("100", "100", "98", "99"), ("99", "99", "98.5", "98.99"))

    deal = backtest(bars, **LADDER_93)["deals"][0]

    assert legs(deal)[1:] == [("so1", D("98.99"), iso(bars.times[2]))]


def test_a_resting_buy_fills_at_its_limit_price_even_when_the_bar_opens_below_it():
    bars = hand_made(FLAT, ("96", "98", "95.5", "97.5"))

    deal = backtest(bars, **LADDER_93, safety_mode="resting", active_safety_orders=1)["deals"][0]

    assert legs(deal)[1:] == [("so1", D(99), iso(bars.times[1]))]


RESTING_ONE = {
    **PLAIN,
    "safety_order_size": 10,
    "max_safety_orders": 1,
    "take_profit": 1,  # 101 from the base fill of 100
    "safety_mode": "resting",
}


def test_in_a_bar_that_closes_down_the_high_comes_first_so_the_take_profit_wins():
    # open 100, high 101.5 (take profit at 101), low 98.5 (safety at 99), close 99.5
    bars = hand_made(FLAT, ("100", "101.5", "98.5", "99.5"))

    deal = backtest(bars, **RESTING_ONE)["deals"][0]

    assert legs(deal) == [
        ("base", D(100), iso(bars.times[0])),
        ("tp", D(101), iso(bars.times[1])),
    ]
    assert deal["close_reason"] == "take_profit"


def test_in_a_bar_that_closes_up_the_low_comes_first_so_the_safety_buy_wins():
    # the same range closing up: the safety buy at 99 fills first, the take
    # profit it invalidates is re-placed at the close from the new average
    bars = hand_made(FLAT, ("100", "101.5", "98.5", "100.5"), ("100.5", "101", "100.4", "100.8"))

    deal = backtest(bars, **RESTING_ONE)["deals"][0]

    average = D(110) / (D(100) / 100 + D(10) / 99)
    assert legs(deal) == [
        ("base", D(100), iso(bars.times[0])),
        ("so1", D(99), iso(bars.times[1])),
        ("tp", average * D("1.01"), iso(bars.times[2])),
    ]
    assert average * D("1.01") < D("101.5")  # bar 1 reached it: only the order of events kept it


def test_a_safety_fill_resets_a_trailing_take_profit_that_had_started():
    bot = {**PLAIN, "safety_order_size": 10, "max_safety_orders": 1, "take_profit": 1}
    bars = hand_made(
        FLAT,
        # high 101.2 reaches the take profit (101): trailing starts; the close
        # 98.5 is below 101.2 * 0.995 but also crosses below the level at 99
        ("100", "101.2", "98", "98.5"),
        ("98.5", "99", "98", "98.8"),
        # the re-priced take profit (about 100.79) is reached: trailing again
        ("99", "101.5", "99", "101.3"),
        # 100.9 <= 101.5 * 0.995 = 100.9925: exit at this close
        ("101.3", "101.4", "100.5", "100.9"),
    )

    deal = backtest(bars, **bot, trailing_deviation="0.5")["deals"][0]

    assert legs(deal) == [
        ("base", D(100), iso(bars.times[0])),
        ("so1", D("98.5"), iso(bars.times[1])),
        ("tp", D("100.9"), iso(bars.times[4])),
    ]
    assert deal["close_reason"] == "take_profit"


def test_at_a_close_the_safety_fill_comes_before_the_stop_loss_and_the_new_entry_after_it():
    bot = {**PLAIN, "safety_order_size": 100, "max_safety_orders": 1, "stop_loss": 2}
    bars = hand_made(
        FLAT,
        # 97.9 is below the first stop (98) but crosses the level at 99 first:
        # the new average (about 98.94) puts the stop at about 96.96
        ("100", "100", "97.5", "97.9"),
        ("97.9", "98", "96.4", "96.5"),
    )

    deals = backtest(bars, **bot)["deals"]

    assert legs(deals[0]) == [
        ("base", D(100), iso(bars.times[0])),
        ("so1", D("97.9"), iso(bars.times[1])),
        ("sl", D("96.5"), iso(bars.times[2])),
    ]
    # cooldown 0: a new deal opens at the close where the last one stopped out
    assert deals[1]["opened_at"] == iso(bars.times[2])
    assert legs(deals[1]) == [("base", D("96.5"), iso(bars.times[2]))]


def test_a_deal_closed_in_a_bar_waits_exactly_the_cooldown_before_the_next_opens():
    bars = hand_made(FLAT, ("100", "102", "100", "101"), ("101", "101", "101", "101"), FLAT, FLAT)

    deals = backtest(bars, **{**PLAIN, "take_profit": 1}, cooldown=600)["deals"]

    assert deals[0]["closed_at"] == iso(bars.times[1])
    # 300 s after that bar's open is too early; 600 s is enough
    assert deals[1]["opened_at"] == iso(bars.times[3])


def test_a_base_take_profit_stays_put_after_a_safety_fill():
    bot = {**LADDER_93, "take_profit": 2, "take_profit_type": "base"}
    bars = hand_made(FLAT, ("100", "100", "98", "98.5"), ("98.5", "102", "98.5", "101"))

    deal = backtest(bars, **bot)["deals"][0]

    assert legs(deal)[1:] == [
        ("so1", D("98.5"), iso(bars.times[1])),
        ("tp", D(102), iso(bars.times[2])),
    ]


def test_several_deals_open_one_per_bar_up_to_max_active_deals():
    bars = hand_made(FLAT, FLAT, FLAT, FLAT)

    document = backtest(bars, **PLAIN, max_active_deals=2)

    assert [deal["opened_at"] for deal in document["deals"]] == [
        iso(bars.times[0]),
        iso(bars.times[1]),
    ]
    assert [deal["closed_at"] for deal in document["deals"]] == [None, None]
    assert document["summary"]["pnl_quote"] == "0"
    assert document["summary"]["max_quote_committed"] == "200"


# --- the command --------------------------------------------------------------------------
def run_command(tmp_path: Path, bot: dict | str, candles: Path) -> subprocess.CompletedProcess:
    bot_file = tmp_path / "bot.json"
    bot_file.write_text(bot if isinstance(bot, str) else json.dumps(bot))
    return manage("backtest_bot", "--candles", candles, "--bot", bot_file, timeout=120)


COMMAND_BOT = {
    "name": "ETHBTC dip buyer",
    "symbol": "ETHBTC",
    "base_timeframe": "5m",
    "entry": {"conditions": [{"indicator": "RSI", "operator": "<", "value": 30}]},
    "base_order_size": "0.01",
    "safety_order_size": "0.005",
    "max_safety_orders": 3,
    "take_profit": 1.5,
}


def test_the_command_prints_one_json_document_in_the_documented_shape(tmp_path):
    result = run_command(tmp_path, COMMAND_BOT, KLINES_DIR / "ETHBTC-5m.csv")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"bot", "deals", "summary"}
    assert document["bot"]["name"] == "ETHBTC dip buyer"
    assert document["bot"]["take_profit"] == "1.5"
    assert set(document["summary"]) == {
        "deals",
        "wins",
        "pnl_quote",
        "max_safety_orders_used",
        "max_quote_committed",
    }
    assert document["deals"]
    for deal in document["deals"]:
        assert set(deal) == {
            "opened_at",
            "closed_at",
            "close_reason",
            "orders",
            "pnl_quote",
            "pnl_pct",
        }
        assert deal["opened_at"].endswith("Z")
        for order in deal["orders"]:
            assert set(order) == {"leg", "side", "price", "quantity", "quote", "fee", "filled_at"}
            assert all(isinstance(order[key], str) for key in ("price", "quantity", "quote", "fee"))


def test_bad_input_is_one_line_on_stderr_and_exit_code_2(tmp_path):
    result = run_command(tmp_path, {**COMMAND_BOT, "takeprofit": 2}, KLINES_DIR / "ETHBTC-5m.csv")

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "takeprofit: unknown field" in result.stderr


def test_candles_of_another_symbol_than_the_bot_are_refused(ethbtc):
    with pytest.raises(ConditionError) as error:
        backtest_bot({**COMMAND_BOT, "symbol": "LTCBTC"}, [CandleSet("ETHBTC", "5m", ethbtc.frame)])

    assert error.value.field == "symbol"


def test_a_base_timeframe_finer_than_the_candles_is_refused(ethbtc):
    with pytest.raises(ConditionError, match="no candles for timeframe 1m"):
        backtest_bot(
            {**COMMAND_BOT, "base_timeframe": "1m"}, [CandleSet("ETHBTC", "5m", ethbtc.frame)]
        )


def test_a_bot_of_another_kind_is_refused(ethbtc):
    with pytest.raises(BotSettingsError) as error:
        backtest_bot({**COMMAND_BOT, "kind": "grid"}, [CandleSet("ETHBTC", "5m", ethbtc.frame)])

    assert error.value.field == "kind"


def test_a_coarser_base_timeframe_is_built_from_the_candles(ethbtc):
    document = backtest(ethbtc, base_timeframe="15m", base_order_size="0.01", take_profit=1)

    # each deal opens at the close of a 15m bar: the close of its last 5m bar
    assert document["bot"]["base_timeframe"] == "15m"
    assert len(document["deals"]) >= 3
    index = {iso(t): bar for bar, t in enumerate(ethbtc.times)}
    for deal in document["deals"]:
        opened = datetime.fromisoformat(deal["opened_at"])
        assert opened.minute % 15 == 0
        last_five = iso(int(opened.timestamp() * 1000) + 2 * FIVE_MINUTES_MS)
        assert D(deal["orders"][0]["price"]) == ethbtc.close[index[last_five]]
