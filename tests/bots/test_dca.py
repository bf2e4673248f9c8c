"""The DCA core (bots/dca.py) and the paper fill arithmetic (bots/fills.py):
pure functions, no database."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bots.dca import (
    DCA_DEFAULTS,
    BotSettingsError,
    DcaSettings,
    average_entry,
    max_quote_per_deal,
    safety_ladder,
    stop_loss_price,
    take_profit_price,
    validate_settings,
)
from bots.fills import (
    intrabar_path,
    limit_buy,
    limit_sell,
    limit_touched,
    market_buy,
    market_sell,
)
from tests.conftest import REPO

D = Decimal
MINIMAL = {"base_order_size": "100", "take_profit": "1.5"}
WITH_SAFETY_ORDERS = {
    **MINIMAL,
    "safety_order_size": "50",
    "max_safety_orders": 5,
    "active_safety_orders": 2,
    "price_deviation": 1,
    "step_scale": 1.5,
    "volume_scale": 1.2,
}


def settings_of(**fields) -> DcaSettings:
    return validate_settings({**MINIMAL, **fields}, symbol="BTCUSDT", base_timeframe="15m")


def field_of_error(raw: dict, symbol: str = "BTCUSDT") -> str:
    with pytest.raises(BotSettingsError) as error:
        validate_settings(raw, symbol=symbol, base_timeframe="15m")
    return error.value.field


# --- the ladder ---------------------------------------------------------------------------
def test_the_worked_example_of_bots_md_prices_the_ladder_at_99_97_and_93():
    settings = settings_of(
        safety_order_size=10, max_safety_orders=3, price_deviation=1, step_scale=2, volume_scale=2
    )

    ladder = safety_ladder(settings, D(100))

    assert [(level.n, level.price, level.quote) for level in ladder] == [
        (1, D(99), D(10)),
        (2, D(97), D(20)),
        (3, D(93), D(40)),
    ]
    assert [level.deviation_pct for level in ladder] == [D(1), D(3), D(7)]


def test_a_step_scale_of_one_spaces_the_levels_evenly_at_d_times_n():
    settings = settings_of(
        safety_order_size="5", max_safety_orders=4, price_deviation="1.5", step_scale=1
    )

    ladder = safety_ladder(settings, D("200"))

    assert [level.deviation_pct for level in ladder] == [D("1.5"), D("3.0"), D("4.5"), D("6.0")]
    assert [level.price for level in ladder] == [D("197"), D("194"), D("191"), D("188")]
    assert [level.quote for level in ladder] == [D("5")] * 4


def test_the_ladder_follows_the_closed_form_for_a_step_scale_below_one():
    settings = settings_of(
        safety_order_size="1", max_safety_orders=6, price_deviation="2", step_scale="0.7"
    )
    d, s = D("2"), D("0.7")

    ladder = safety_ladder(settings, D("1"))

    for level in ladder:
        closed_form = d * (1 - s**level.n) / (1 - s)
        assert abs(level.deviation_pct - closed_form) < D("1e-25")


def test_a_bot_without_safety_orders_has_an_empty_ladder_and_spends_only_its_base_order():
    settings = settings_of(max_safety_orders=0)

    assert safety_ladder(settings, D(100)) == []
    assert settings.safety_order_size is None
    assert max_quote_per_deal(settings) == D(100)


def test_max_quote_per_deal_is_the_base_order_plus_every_safety_order():
    settings = settings_of(
        base_order_size=10,
        safety_order_size=10,
        max_safety_orders=3,
        step_scale=2,
        volume_scale=2,
    )

    assert max_quote_per_deal(settings) == D(10 + 10 + 20 + 40)


# --- prices of a deal ---------------------------------------------------------------------
def test_the_average_entry_counts_fees_so_it_sits_above_the_fill_price():
    fill = market_buy(D(100), D(50), D("0.001"))

    average = average_entry(fill.quote, fill.net_base)

    assert fill.net_base == D("1.998")
    assert average == D(100) / D("1.998")
    assert average > D(50)


def test_take_profit_is_priced_from_the_average_or_from_the_base_fill():
    on_average = settings_of(take_profit=2, take_profit_type="average")
    on_base = settings_of(take_profit=2, take_profit_type="base")

    assert take_profit_price(on_average, D(95), D(100)) == D("96.90")
    assert take_profit_price(on_base, D(95), D(100)) == D(102)


def test_the_stop_loss_sits_below_the_average_and_is_absent_when_not_set():
    assert stop_loss_price(settings_of(stop_loss=10), D(95)) == D("85.5")
    assert stop_loss_price(settings_of(), D(95)) is None


def test_an_average_needs_some_base_bought():
    with pytest.raises(ValueError, match="no base bought"):
        average_entry(D(0), D(0))


# --- validation: what is accepted ---------------------------------------------------------
def test_optional_fields_take_the_documented_defaults():
    settings = settings_of()

    assert settings.entry == {"mode": "asap"}
    assert settings.max_safety_orders == DCA_DEFAULTS["max_safety_orders"] == 0
    assert settings.active_safety_orders == 1
    assert settings.price_deviation == D(DCA_DEFAULTS["price_deviation"])
    assert (settings.step_scale, settings.volume_scale) == (D(1), D(1))
    assert settings.take_profit_type == "average"
    assert settings.trailing_deviation is None and settings.stop_loss is None
    assert (settings.cooldown, settings.max_active_deals) == (0, 1)
    assert settings.safety_mode == "triggered"
    assert settings.fee_rate == D("0.001")


def test_numbers_may_be_json_numbers_or_decimal_strings_and_floats_enter_exactly():
    as_numbers = settings_of(**{**WITH_SAFETY_ORDERS, "base_order_size": 0.1, "take_profit": 1.1})
    as_strings = settings_of(
        **{**WITH_SAFETY_ORDERS, "base_order_size": "0.1", "take_profit": " 1.10 "}
    )

    assert as_numbers.base_order_size == D("0.1")
    assert as_numbers.take_profit == D("1.1")
    assert as_numbers == as_strings
    assert settings_of(cooldown="300", max_active_deals=2.0).cooldown == 300


def test_null_means_the_default_for_optional_fields():
    settings = settings_of(stop_loss=None, trailing_deviation=None, entry=None, cooldown=None)

    assert settings.stop_loss is None and settings.trailing_deviation is None
    assert settings.entry == {"mode": "asap"}
    assert settings.cooldown == 0


def test_an_entry_playbook_is_kept_as_given():
    entry = {
        "mode": "playbook",
        "conditions": [
            {"condition": {"indicator": "RSI", "operator": "<", "value": 30}, "priority": 1}
        ],
        "gateLogic": "ALL",
    }

    settings = settings_of(entry=entry)

    assert settings.entry == entry
    assert settings.entry is not entry  # a later change to the request cannot leak in


def test_to_json_is_plain_json_and_reads_back_to_equal_settings():
    settings = settings_of(
        **WITH_SAFETY_ORDERS,
        entry={"conditions": [{"indicator": "RSI", "operator": "<", "value": 30}]},
        trailing_deviation="0.5",
        stop_loss=10,
        cooldown=300,
        safety_mode="resting",
        fee_rate="0.00075",
    )

    document = json.loads(json.dumps(settings.to_json()))

    assert document["base_order_size"] == "100"
    assert document["trailing_deviation"] == "0.5"
    assert validate_settings(document, symbol="BTCUSDT", base_timeframe="15m") == settings


def test_a_budget_that_covers_every_deal_exactly_is_enough():
    raw = {**WITH_SAFETY_ORDERS, "max_safety_orders": 2, "volume_scale": 1, "max_active_deals": 2}

    settings = validate_settings(
        raw, symbol="BTCUSDT", base_timeframe="15m", available_quote=D(400)
    )

    assert max_quote_per_deal(settings) * settings.max_active_deals == D(400)


# --- validation: every error names its field ----------------------------------------------
INVALID = [
    ({"base_order_size": None}, "base_order_size"),
    ({"base_order_size": 0}, "base_order_size"),
    ({"base_order_size": "-1"}, "base_order_size"),
    ({"base_order_size": "ten"}, "base_order_size"),
    ({"base_order_size": True}, "base_order_size"),
    ({"base_order_size": float("nan")}, "base_order_size"),
    ({"base_order_size": float("inf")}, "base_order_size"),
    ({"base_order_size": "Infinity"}, "base_order_size"),
    ({"base_order_size": "NaN"}, "base_order_size"),
    ({"base_order_size": [100]}, "base_order_size"),
    ({"base_order_size": "1e30"}, "base_order_size"),
    ({"base_order_size": "0.0000000000000000001"}, "base_order_size"),
    ({"safety_order_size": 0}, "safety_order_size"),
    ({"safety_order_size": None}, "safety_order_size"),
    ({"max_safety_orders": 101}, "max_safety_orders"),
    ({"max_safety_orders": -1}, "max_safety_orders"),
    ({"max_safety_orders": 2.5}, "max_safety_orders"),
    ({"max_safety_orders": "1e999999"}, "max_safety_orders"),
    ({"active_safety_orders": 0}, "active_safety_orders"),
    ({"active_safety_orders": 6}, "active_safety_orders"),
    ({"price_deviation": 0}, "price_deviation"),
    ({"price_deviation": 100}, "price_deviation"),
    ({"step_scale": 0}, "step_scale"),
    ({"step_scale": "10.01"}, "step_scale"),
    ({"volume_scale": -1}, "volume_scale"),
    ({"volume_scale": 11}, "volume_scale"),
    ({"take_profit": None}, "take_profit"),
    ({"take_profit": 0}, "take_profit"),
    ({"take_profit": "1000.01"}, "take_profit"),
    ({"take_profit_type": "median"}, "take_profit_type"),
    ({"take_profit_type": 1}, "take_profit_type"),
    ({"trailing_deviation": 0}, "trailing_deviation"),
    ({"trailing_deviation": "1.5"}, "trailing_deviation"),  # == take_profit
    ({"stop_loss": 0}, "stop_loss"),
    ({"stop_loss": 100}, "stop_loss"),
    ({"cooldown": -1}, "cooldown"),
    ({"cooldown": 30 * 86_400 + 1}, "cooldown"),
    ({"cooldown": 1.5}, "cooldown"),
    ({"max_active_deals": 0}, "max_active_deals"),
    ({"max_active_deals": 101}, "max_active_deals"),
    ({"safety_mode": "lazy"}, "safety_mode"),
    ({"fee_rate": "-0.001"}, "fee_rate"),
    ({"fee_rate": "0.06"}, "fee_rate"),
    ({"take_proft": 2}, "take_proft"),
    ({"entry": "RSI < 30"}, "entry"),
    ({"entry": {"mode": "asap", "conditions": []}}, "entry.conditions"),
    ({"entry": {"conditions": []}}, "entry.conditions"),
    ({"entry": {"mode": "sometimes", "conditions": [{"indicator": "RSI"}]}}, "entry.mode"),
    (
        {"entry": {"conditions": [{"indicator": "RSX", "operator": "<", "value": 30}]}},
        "entry.conditions.0.indicator",
    ),
    (
        {
            "entry": {
                "mode": "playbook",
                "conditions": [
                    {"condition": {"indicator": "RSI", "operator": "<", "value": 30}},
                    {"condition": {"indicator": "RSI", "operator": "<<", "value": 20}},
                ],
            }
        },
        "entry.conditions.1.condition.operator",
    ),
    (
        {
            "entry": {
                "conditions": [
                    {"indicator": "RSI", "operator": "<", "value": 30, "symbol": "ETHBTC"}
                ]
            }
        },
        "entry.conditions.0.symbol",
    ),
    # deviation_n = 20 * n reaches 100% at the fifth level
    ({"price_deviation": 20, "step_scale": 1}, "max_safety_orders"),
]


@pytest.mark.parametrize(("change", "field"), INVALID, ids=[f"{f}-{c}" for c, f in INVALID])
def test_an_invalid_setting_is_rejected_naming_its_field(change: dict, field: str):
    raw = {**WITH_SAFETY_ORDERS, **change}
    raw = {key: value for key, value in raw.items() if not (key in change and value is None)}

    assert field_of_error(raw) == field


def test_safety_order_size_is_required_only_when_there_are_safety_orders():
    without = {**MINIMAL, "max_safety_orders": 3}

    assert field_of_error(without) == "safety_order_size"
    assert settings_of(max_safety_orders=0).max_safety_orders == 0


def test_unknown_fields_are_all_named():
    with pytest.raises(BotSettingsError) as error:
        validate_settings(
            {**MINIMAL, "takeProfit": 1, "symbol": "BTCUSDT"},
            symbol="BTCUSDT",
            base_timeframe="15m",
        )

    assert error.value.field == "takeProfit"
    assert "symbol" in error.value.reason


def test_a_budget_too_small_for_every_deal_names_base_order_size_with_the_amounts():
    raw = {**WITH_SAFETY_ORDERS, "max_safety_orders": 2, "volume_scale": 1, "max_active_deals": 2}

    with pytest.raises(BotSettingsError) as error:
        validate_settings(raw, symbol="BTCUSDT", base_timeframe="15m", available_quote=D(399))

    assert error.value.field == "base_order_size"
    assert "200" in error.value.reason  # per deal: 100 + 50 + 50
    assert "400" in error.value.reason  # two deals
    assert "399" in error.value.reason


def test_a_ladder_too_deep_says_how_many_safety_orders_fit():
    with pytest.raises(BotSettingsError) as error:
        settings_of(**{**WITH_SAFETY_ORDERS, "price_deviation": 30, "step_scale": 1})

    assert error.value.field == "max_safety_orders"
    assert "150%" in error.value.reason
    assert "at most 3 safety orders" in error.value.reason


def test_the_bot_market_itself_is_checked():
    assert field_of_error(MINIMAL, symbol="btc/usdt") == "symbol"
    with pytest.raises(BotSettingsError) as error:
        validate_settings(MINIMAL, symbol="BTCUSDT", base_timeframe="7m")
    assert error.value.field == "base_timeframe"


def test_a_settings_error_reads_field_colon_reason_and_survives_pickling():
    error = BotSettingsError("safety_order_size", "must be greater than 0, got 0")

    copy = pickle.loads(pickle.dumps(error))

    assert str(error) == "safety_order_size: must be greater than 0, got 0"
    assert (copy.field, copy.reason, str(copy)) == (error.field, error.reason, str(error))


# --- properties ---------------------------------------------------------------------------
def decimals(low: str, high: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(D(low), D(high), places=places, allow_nan=False, allow_infinity=False)


@st.composite
def ladder_settings(draw: st.DrawFn) -> DcaSettings:
    """Settings whose ladder fits: the deviation is drawn below what the
    drawn step_scale and order count allow, so few draws are wasted."""
    step_scale = draw(decimals("0.5", "3", 2))
    orders = draw(st.integers(1, 100))
    depth = sum(float(step_scale) ** k for k in range(orders))  # deviation_n / d
    widest = math.floor(min(99.0, 99.0 / depth) * 100) / 100  # rounded down: it must fit
    assume(widest >= 0.01)
    raw = {
        **MINIMAL,
        "safety_order_size": str(draw(decimals("0.01", "1000", 2))),
        "max_safety_orders": orders,
        "price_deviation": str(draw(decimals("0.01", str(widest), 2))),
        "step_scale": str(step_scale),
        "volume_scale": str(draw(decimals("0.1", "10", 2))),
    }
    try:
        return validate_settings(raw, symbol="BTCUSDT", base_timeframe="15m")
    except BotSettingsError as error:
        # Steps that shrink to nothing (step_scale < 1, many orders) are rejected.
        assume(error.field != "step_scale")
        raise


@given(settings=ladder_settings(), base_price=decimals("0.00000001", "100000", 8))
def test_every_accepted_ladder_is_strictly_decreasing_and_above_zero(
    settings: DcaSettings, base_price: Decimal
):
    prices = [level.price for level in safety_ladder(settings, base_price)]

    assert len(prices) == settings.max_safety_orders
    assert all(later < earlier for earlier, later in pairwise([base_price, *prices]))
    assert prices[-1] > 0


@given(settings=ladder_settings())
def test_any_accepted_settings_read_back_from_their_json_unchanged(settings: DcaSettings):
    document = json.loads(json.dumps(settings.to_json()))

    assert validate_settings(document, symbol="BTCUSDT", base_timeframe="15m") == settings


FILLS = st.lists(
    st.tuples(decimals("0.0001", "100000", 4), decimals("0.01", "10000", 2)),
    min_size=1,
    max_size=20,
)


@given(fills=FILLS)
def test_without_fees_the_average_entry_lies_between_the_lowest_and_highest_fill(fills):
    bought = [market_buy(quote, price, D(0)) for price, quote in fills]

    average = average_entry(sum(f.quote for f in bought), sum(f.net_base for f in bought))

    lowest, highest = min(price for price, _ in fills), max(price for price, _ in fills)
    # 28 significant digits: a division may land a unit in the last place outside.
    slack = highest * D("1e-26")
    assert lowest - slack <= average <= highest + slack


@given(fills=FILLS, fee_rate=decimals("0.0001", "0.01", 4))
def test_with_fees_the_average_entry_rises_by_at_most_the_fee_share(fills, fee_rate):
    bought = [market_buy(quote, price, fee_rate) for price, quote in fills]

    average = average_entry(sum(f.quote for f in bought), sum(f.net_base for f in bought))

    lowest, highest = min(price for price, _ in fills), max(price for price, _ in fills)
    slack = highest * D("1e-25")
    assert lowest - slack <= average <= highest / (1 - fee_rate) + slack
    assert average > lowest


# --- the paper fill arithmetic ------------------------------------------------------------
def test_a_market_buy_spends_the_quote_and_pays_its_fee_in_base():
    fill = market_buy(D(100), D(50), D("0.001"))

    assert (fill.side, fill.price, fill.quantity, fill.quote) == ("buy", D(50), D(2), D(100))
    assert (fill.fee, fill.fee_asset) == (D("0.002"), "base")
    assert (fill.net_base, fill.net_quote) == (D("1.998"), D(100))


def test_a_market_sell_receives_the_quote_less_its_fee():
    fill = market_sell(D(2), D(55), D("0.001"))

    assert (fill.side, fill.quantity, fill.quote) == ("sell", D(2), D(110))
    assert (fill.fee, fill.fee_asset) == (D("0.110"), "quote")
    assert (fill.net_base, fill.net_quote) == (D(2), D("109.890"))


def test_limit_orders_fill_their_quantity_at_the_limit_price():
    buy = limit_buy(D("0.5"), D(99), D("0.001"))
    sell = limit_sell(D("0.5"), D(101), D("0.001"))

    assert (buy.quote, buy.fee, buy.net_base) == (D("49.5"), D("0.0005"), D("0.4995"))
    assert (sell.quote, sell.fee, sell.net_quote) == (D("50.5"), D("0.0505"), D("50.4495"))


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (market_buy, (D(100), D(0), D("0.001"))),
        (market_buy, (D(0), D(50), D("0.001"))),
        (market_sell, (D(1), D(50), D(1))),
        (limit_buy, (D(-1), D(50), D("0.001"))),
    ],
)
def test_a_fill_refuses_a_zero_price_amount_or_an_impossible_fee(call, args):
    with pytest.raises(ValueError):
        call(*args)


def test_a_bar_that_closes_up_is_walked_low_first_and_one_that_closes_down_high_first():
    assert intrabar_path(D(10), D(12), D(9), D(11)) == (D(10), D(9), D(12), D(11))
    assert intrabar_path(D(10), D(12), D(9), D(10)) == (D(10), D(9), D(12), D(10))
    assert intrabar_path(D(10), D(12), D(9), D("9.5")) == (D(10), D(12), D(9), D("9.5"))


def test_a_limit_is_touched_when_the_bar_reaches_its_price_exactly():
    assert limit_touched("buy", D(99), high=D(101), low=D(99))
    assert not limit_touched("buy", D(99), high=D(101), low=D("99.01"))
    assert limit_touched("sell", D(101), high=D(101), low=D(99))
    assert not limit_touched("sell", D(101), high=D("100.99"), low=D(99))
    with pytest.raises(ValueError):
        limit_touched("hold", D(1), D(1), D(1))


def test_the_dca_core_loads_without_django():
    probe = (
        "import sys, bots.dca, bots.fills, bots.simulate\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
