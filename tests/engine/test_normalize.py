from __future__ import annotations

import hashlib
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conditions.engine.catalog import INDICATORS
from conditions.engine.errors import ConditionError
from conditions.engine.normalize import canonical_json, condition_id, normalize_condition

from .strategies import as_float_json, canonical_conditions, changed_meaning, spellings

# The CONDITIONS.md section 2 example, serialized by hand as the spec describes.
SPEC_EXAMPLE_JSON = (
    '{"left":{"kind":"indicator","name":"RSI","output":"value","params":{"length":14.0}},'
    '"op":"crosses_below","right":{"kind":"const","value":30.0},'
    '"symbol":"BTCUSDT","timeframe":"1h"}'
)
SPEC_EXAMPLE_ID = hashlib.sha256(SPEC_EXAMPLE_JSON.encode()).hexdigest()
SPEC_EXAMPLE = {
    "symbol": "BTCUSDT",
    "timeframe": "1h",
    "left": {"kind": "indicator", "name": "RSI", "params": {"length": 14}, "output": "value"},
    "op": "crosses_below",
    "right": {"kind": "const", "value": 30.0},
}


def cid(raw: dict, **enclosing: str) -> str:
    return condition_id(normalize_condition(raw, **enclosing))


# --- the documented examples -------------------------------------------------


def test_it_gives_the_spec_example_its_documented_id() -> None:
    assert len(SPEC_EXAMPLE_ID) == 64
    assert canonical_json(SPEC_EXAMPLE) == SPEC_EXAMPLE_JSON
    assert condition_id(SPEC_EXAMPLE) == SPEC_EXAMPLE_ID


def test_it_normalizes_the_registry_example_to_the_spec_canonical_form() -> None:
    raw = {
        "symbol": "BTCUSDT",
        "timeframe": "1h",
        "indicator": "RSI",
        "operator": "crosses_below",
        "value": 30,
        "period": 14,
    }
    assert normalize_condition(raw) == SPEC_EXAMPLE
    assert cid(raw) == SPEC_EXAMPLE_ID


def test_it_reads_the_alert_shape_examples() -> None:
    enclosing = {"symbol": "BTCUSDT", "timeframe": "15m"}
    rsi = {
        "type": "indicator",
        "indicator": "RSI",
        "component": "RSI",
        "operator": "<",
        "compareWith": "value",
        "compareValue": 30,
        "timeframe": "same",
        "settings": {"length": 14},
    }
    assert normalize_condition(rsi, **enclosing) == {
        **SPEC_EXAMPLE,
        "timeframe": "15m",
        "op": "lt",
    }
    price_over_ema = {
        "type": "price",
        "operator": ">",
        "compareWith": "indicator_component",
        "rhs": {"indicator": "EMA", "component": "EMA", "settings": {"period": 20}},
        "timeframe": "same",
    }
    assert normalize_condition(price_over_ema, **enclosing) == {
        "symbol": "BTCUSDT",
        "timeframe": "15m",
        "left": {"kind": "price", "field": "close"},
        "op": "gt",
        "right": {
            "kind": "indicator",
            "name": "EMA",
            "params": {"length": 20, "source": "close"},
            "output": "value",
        },
    }
    volume = {
        "type": "volume",
        "operator": ">",
        "compareWith": "value",
        "compareValue": 1000000,
        "timeframe": "same",
    }
    assert normalize_condition(volume, **enclosing) == {
        "symbol": "BTCUSDT",
        "timeframe": "15m",
        "left": {"kind": "volume"},
        "op": "gt",
        "right": {"kind": "const", "value": 1_000_000.0},
    }


def test_it_compares_a_short_shape_without_right_hand_side_with_zero() -> None:
    raw = {"indicator": "MACD", "operator": "crosses_above", "component": "histogram"}
    assert normalize_condition(raw, symbol="ETHBTC", timeframe="5m") == {
        "symbol": "ETHBTC",
        "timeframe": "5m",
        "left": {
            "kind": "indicator",
            "name": "MACD",
            "params": {"fast": 12, "slow": 26, "signal": 9},
            "output": "histogram",
        },
        "op": "crosses_above",
        "right": {"kind": "const", "value": 0.0},
    }


def test_it_fills_operator_arguments_and_omits_right_for_unary_operators() -> None:
    canonical = normalize_condition(
        {"indicator": "RSI", "operator": "moving_up_pct", "pct": 5},
        symbol="BTCUSDT",
        timeframe="1h",
    )
    assert "right" not in canonical
    assert canonical["args"] == {"bars": 1.0, "pct": 5.0}
    assert all(isinstance(value, float) for value in canonical["args"].values())
    divergence = normalize_condition(
        {"indicator": "RSI", "operator": "bullish_divergence"}, symbol="BTCUSDT", timeframe="1h"
    )
    assert divergence["args"] == {"pivot": 3.0, "lookback": 60.0}
    assert "args" not in SPEC_EXAMPLE


def test_it_reads_channels_in_every_shape() -> None:
    expected = {
        "kind": "channel",
        "lower": {"kind": "const", "value": 30.0},
        "upper": {"kind": "const", "value": 70.0},
    }
    shapes = [
        {"indicator": "RSI", "operator": "inside_channel", "channel": {"lower": 30, "upper": 70}},
        {"indicator": "RSI", "operator": "inside_channel", "value": {"lower": 30, "upper": 70.0}},
        {
            "type": "indicator",
            "indicator": "RSI",
            "operator": "inside_channel",
            "compareWith": "channel",
            "compareValue": {"lower": 30, "upper": 70},
        },
        {
            "left": {"kind": "indicator", "name": "RSI"},
            "op": "inside_channel",
            "right": {"kind": "channel", "lower": 30, "upper": {"kind": "const", "value": 70}},
        },
    ]
    for raw in shapes:
        canonical = normalize_condition(raw, symbol="BTCUSDT", timeframe="1h")
        assert canonical["right"] == expected


def test_it_takes_a_channel_between_two_indicator_outputs() -> None:
    raw = {
        "type": "price",
        "operator": "exiting_channel",
        "channel": {
            "lower": {"indicator": "BB", "component": "lower"},
            "upper": {"indicator": "bollinger", "component": "UPPER", "settings": {"stddev": 2}},
        },
    }
    right = normalize_condition(raw, symbol="BTCUSDT", timeframe="1h")["right"]
    bands = {"kind": "indicator", "name": "BBANDS", "params": {"length": 20, "std": 2.0}}
    assert right == {
        "kind": "channel",
        "lower": {**bands, "output": "lower"},
        "upper": {**bands, "output": "upper"},
    }


def test_it_takes_symbol_and_timeframe_from_the_condition_before_the_enclosing_alert() -> None:
    raw = {"symbol": "ethbtc", "timeframe": "4H", "indicator": "RSI", "operator": "<", "value": 30}
    canonical = normalize_condition(raw, symbol="BTCUSDT", timeframe="15m")
    assert (canonical["symbol"], canonical["timeframe"]) == ("ETHBTC", "4h")
    same = normalize_condition({**raw, "timeframe": "same"}, symbol="BTCUSDT", timeframe="15m")
    assert (same["symbol"], same["timeframe"]) == ("ETHBTC", "15m")


def test_it_treats_the_volume_indicator_as_volume() -> None:
    as_indicator = {"indicator": "VOLUME", "operator": ">", "value": 100}
    as_type = {"type": "volume", "operator": ">", "value": 100}
    assert cid(as_indicator, symbol="BTCUSDT", timeframe="1h") == cid(
        as_type, symbol="BTCUSDT", timeframe="1h"
    )


def test_it_treats_minus_zero_as_zero() -> None:
    minus = {"indicator": "MACD", "operator": ">", "value": -0.0}
    plain = {"indicator": "MACD", "operator": ">"}
    assert cid(minus, symbol="BTCUSDT", timeframe="1h") == cid(
        plain, symbol="BTCUSDT", timeframe="1h"
    )


def test_it_ignores_descriptive_keys_only() -> None:
    raw = {"indicator": "RSI", "operator": "<", "value": 30, "id": "abc", "label": "oversold"}
    assert cid(raw, symbol="BTCUSDT", timeframe="1h") == cid(
        {"indicator": "RSI", "operator": "<", "value": 30}, symbol="BTCUSDT", timeframe="1h"
    )


def test_it_keeps_crosses_symmetric_but_not_crosses_above() -> None:
    rsi = {"kind": "indicator", "name": "RSI"}
    sma = {"kind": "indicator", "name": "SMA", "params": {"length": 50}}
    base = {"symbol": "BTCUSDT", "timeframe": "1h"}
    assert cid({**base, "left": rsi, "op": "crosses", "right": sma}) == cid(
        {**base, "left": sma, "op": "crosses", "right": rsi}
    )
    assert cid({**base, "left": rsi, "op": "crosses_above", "right": sma}) != cid(
        {**base, "left": sma, "op": "crosses_above", "right": rsi}
    )
    constant_first = normalize_condition({**base, "left": 50, "op": "crosses", "right": rsi})
    assert constant_first["left"]["kind"] == "indicator"
    assert constant_first["right"] == {"kind": "const", "value": 50.0}


# --- errors ------------------------------------------------------------------

ENCLOSING = {"symbol": "BTCUSDT", "timeframe": "1h"}
RSI_BELOW = {"indicator": "RSI", "operator": "<", "value": 30}


def rsi(**keys: object) -> dict:
    return {**RSI_BELOW, **keys}


def on(indicator: str, operator: str, **keys: object) -> dict:
    return {"indicator": indicator, "operator": operator, **keys}


def canon(**keys: object) -> dict:
    return {**SPEC_EXAMPLE, **keys}


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (rsi(indicator="RSX"), "indicator", "unknown indicator"),
        (rsi(indicator=14), "indicator", "must be a string"),
        (rsi(component="signal"), "component", "unknown output"),
        (rsi(operator="<>"), "operator", "unknown operator"),
        ({"indicator": "RSI", "value": 30}, "operator", "missing"),
        (rsi(period=0), "period", "out of range"),
        (rsi(settings={"length": 1001}), "settings.length", "out of range"),
        (rsi(settings={"length": 14.5}), "settings.length", "whole number"),
        (rsi(settings={"length": "14"}), "settings.length", "string"),
        (rsi(settings={"length": True}), "settings.length", "boolean"),
        (rsi(settings={"lenght": 14}), "settings.lenght", "unknown parameter"),
        (rsi(settings=[14]), "settings", "must be an object"),
        (rsi(std=2), "std", "unknown parameter"),
        (rsi(length=14, period=20), "period", "twice"),
        (on("BB", ">", params={"std": 0}), "params.std", "out of range"),
        (on("MACD", ">", settings={"fast": 26, "slow": 12}), "settings.fast", "smaller than slow"),
        (on("SMA", ">", source="vwap"), "source", "unknown source"),
        (rsi(value="30"), "value", "string"),
        (rsi(value=True), "value", "boolean"),
        (rsi(value=float("nan")), "value", "finite"),
        (rsi(value=float("inf")), "value", "finite"),
        (rsi(value=10**400), "value", "finite"),
        (rsi(compareValue=40), "compareValue", "only one"),
        (rsi(value=None, compareWith="value"), "compareValue", "missing"),
        (rsi(value=None, compareWith="indicator_component"), "rhs", "missing"),
        (rsi(value=None, compareWith="indicator_component", rhs=5), "rhs", "compareWith"),
        (rsi(compareWith="candles"), "compareWith", "unknown"),
        (rsi(timeframe="90m"), "timeframe", "unknown timeframe"),
        (rsi(symbol="BTC/USDT"), "symbol", "letters or digits"),
        (rsi(symbol="B"), "symbol", "letters or digits"),
        (rsi(symbol="A" * 21), "symbol", "letters or digits"),
        (rsi(symbol=1), "symbol", "must be a string"),
        ({"type": "candle", "operator": ">"}, "type", "unknown type"),
        ({"type": "price", "field": "vwap", "operator": ">"}, "field", "unknown price field"),
        ({"type": "price", "indicator": "RSI", "operator": ">"}, "indicator", "price operand"),
        ({"operator": ">", "value": 3}, "indicator", "missing"),
        (on("RSI", "moving_up"), "amount", "missing"),
        (on("RSI", "moving_up", args={"bars": 2}), "args.amount", "missing"),
        (on("RSI", "moving_up", amount=1, bars=0), "bars", "out of range"),
        (on("RSI", "moving_up", amount=1, bars=2.5), "bars", "whole number"),
        (on("RSI", "moving_up", amount=-1), "amount", "negative"),
        (on("RSI", "moving_up", amount=1, args={"pct": 3}), "args.pct", "unknown argument"),
        (on("RSI", "divergence", args={"pivot": 5, "lookback": 5}), "args.lookback", "pivot"),
        (rsi(bars=3), "bars", "takes no arguments"),
        (on("RSI", "moving_up", amount=1, value=3), "value", "no right-hand side"),
        (on("RSI", "inside_channel"), "channel", "missing"),
        (on("RSI", "inside_channel", value=50), "value", "needs a channel"),
        (rsi(value={"lower": 1, "upper": 2}), "value", "not a channel"),
        (rsi(value=None, channel=30), "channel", "must be a channel"),
        (on("RSI", "inside_channel", channel={"lower": 70, "upper": 30}), "channel.lower", "upper"),
        (on("RSI", "inside_channel", channel={"lower": 30}), "channel.upper", "missing"),
        (canon(extra=1), "extra", "unknown key"),
        (canon(op="crosses_sideways"), "op", "unknown operator"),
        (canon(left={"kind": "indicator", "name": "RSI", "params": {"length": 0}}), "left.params.length", "out of range"),
        (canon(left={"kind": "candle"}), "left.kind", "unknown operand kind"),
        (canon(right={"kind": "const"}), "right.value", "missing"),
        (canon(right={"kind": "const", "value": "30"}), "right.value", "string"),
        (canon(right={"kind": "price", "value": 3}), "right.value", "price operand"),
        (canon(left={"kind": "channel", "lower": 1, "upper": 2}), "left", "channel"),
        (canon(timeframe="1hour1"), "timeframe", "unknown timeframe"),
    ],
)  # fmt: skip
def test_it_rejects_bad_input_naming_the_field_and_the_reason(
    raw: dict, field: str, reason: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        normalize_condition(raw, **ENCLOSING)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value) == f"{field}: {caught.value.reason}"


@pytest.mark.parametrize(
    ("raw", "enclosing", "field"),
    [
        (RSI_BELOW, {"symbol": "BTCUSDT"}, "timeframe"),
        (rsi(timeframe="same"), {"symbol": "BTCUSDT"}, "timeframe"),
        (RSI_BELOW, {"timeframe": "1h"}, "symbol"),
    ],
)
def test_it_needs_a_symbol_and_timeframe_from_somewhere(
    raw: dict, enclosing: dict, field: str
) -> None:
    with pytest.raises(ConditionError) as caught:
        normalize_condition(raw, **enclosing)
    assert caught.value.field == field
    assert caught.value.reason.startswith("missing")


def test_it_rejects_something_that_is_not_an_object() -> None:
    with pytest.raises(ConditionError, match="must be an object"):
        normalize_condition(["RSI", "<", 30])  # type: ignore[arg-type]


def test_errors_can_be_placed_inside_an_enclosing_object_and_survive_pickling() -> None:
    with pytest.raises(ConditionError) as caught:
        normalize_condition({**RSI_BELOW, "operator": "<>"}, **ENCLOSING)
    nested = caught.value.within("conditions.0.condition")
    assert nested.field == "conditions.0.condition.operator"
    assert str(nested).startswith("conditions.0.condition.operator: unknown operator")
    assert isinstance(nested, ValueError)
    restored = pickle.loads(pickle.dumps(nested))
    assert (restored.field, restored.reason) == (nested.field, nested.reason)


# --- property tests ----------------------------------------------------------
#
# Strategies draw a meaning as the canonical form the test expects, then write
# it the way a client might: any shape, any alias, defaults left out or spelled
# out, ints for whole floats (they live in strategies.py).

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(data=st.data(), condition=canonical_conditions())
def test_it_gives_one_id_to_one_condition_however_it_is_written(
    data: st.DataObject, condition: dict
) -> None:
    first_raw, first_enclosing = data.draw(spellings(condition))
    second_raw, second_enclosing = data.draw(spellings(condition))

    first = normalize_condition(first_raw, **first_enclosing)
    second = normalize_condition(second_raw, **second_enclosing)

    assert first == condition
    assert as_float_json(first) == as_float_json(condition)
    assert condition_id(first) == condition_id(second)
    assert condition_id(first) == hashlib.sha256(as_float_json(condition).encode()).hexdigest()
    assert canonical_json(normalize_condition(first)) == canonical_json(first)
    assert_canonical_types(first)


PARAM_TYPES = {"int": int, "float": float, "source": str}


def assert_canonical_types(canonical: dict) -> None:
    """Params keep the catalog's types; constants and arguments are floats."""
    operands = [canonical["left"], canonical.get("right")]
    operands += [
        operand[bound]
        for operand in operands
        if operand and operand["kind"] == "channel"
        for bound in ("lower", "upper")
    ]
    for operand in operands:
        if operand and operand["kind"] == "indicator":
            specs = INDICATORS[operand["name"]].params
            assert set(operand["params"]) == set(specs)
            for name, value in operand["params"].items():
                assert type(value) is PARAM_TYPES[specs[name].kind]
        if operand and operand["kind"] == "const":
            assert type(operand["value"]) is float
    assert all(type(value) is float for value in canonical.get("args", {}).values())


@PROPERTY_SETTINGS
@given(data=st.data(), condition=canonical_conditions())
def test_it_gives_different_ids_to_conditions_that_mean_different_things(
    data: st.DataObject, condition: dict
) -> None:
    other = data.draw(changed_meaning(condition))
    assert as_float_json(other) != as_float_json(condition)

    raw, enclosing = data.draw(spellings(condition))
    other_raw, other_enclosing = data.draw(spellings(other))

    assert condition_id(normalize_condition(raw, **enclosing)) != condition_id(
        normalize_condition(other_raw, **other_enclosing)
    )
