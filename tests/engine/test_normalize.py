from __future__ import annotations

import copy
import hashlib
import json
import pickle
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conditions.engine.catalog import INDICATORS, OPERATORS, PRICE_FIELDS, SOURCES
from conditions.engine.errors import ConditionError
from conditions.engine.normalize import canonical_json, condition_id, normalize_condition

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
# out, ints for whole floats.

SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TIMEFRAME_SPELLINGS = {
    "1m": ["1m", "1min"], "3m": ["3m", "3min"], "5m": ["5m", "5 min"], "15m": ["15m", "15min"],
    "30m": ["30m", "30min"], "1h": ["1h", "1H", "60m"], "2h": ["2h", "2H", "120m"],
    "4h": ["4h", "4H", "240m"], "6h": ["6h", "360m"], "8h": ["8h", "480m"], "12h": ["12h", "720m"],
    "1d": ["1d", "1D", "24h"], "3d": ["3d", "3D", "72h"], "1w": ["1w", "1W", "7d"], "1M": ["1M"],
}  # fmt: skip
PARAM_SPELLINGS = {"length": ["length", "period", "Period"], "std": ["std", "stddev"]}
ARG_DEFAULTS = {name: op.args for name, op in OPERATORS.items()}
KIND_ORDER = {"indicator": 0, "price": 1, "volume": 2, "const": 3}


def as_float_json(value: object) -> str:
    def floats(item: object) -> object:
        if isinstance(item, dict):
            return {key: floats(inner) for key, inner in item.items()}
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return float(item)
        return item

    return json.dumps(floats(value), sort_keys=True, separators=(",", ":"))


finite_numbers = st.one_of(
    st.integers(-1_000_000, 1_000_000).map(float),
    st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0),
)


@st.composite
def indicator_operands(draw: st.DrawFn) -> dict:
    name = draw(st.sampled_from([name for name in INDICATORS if name != "VOLUME"]))
    indicator = INDICATORS[name]
    params: dict = {}
    for param, spec in indicator.params.items():
        if spec.kind == "int":
            values = st.integers(int(spec.minimum), int(spec.maximum))
            params[param] = draw(st.one_of(st.just(int(spec.default)), values))
        elif spec.kind == "float":
            values = st.floats(spec.minimum, spec.maximum)
            params[param] = draw(st.one_of(st.just(float(spec.default)), values))
        else:
            params[param] = draw(st.sampled_from(SOURCES))
    if name == "MACD" and params["fast"] >= params["slow"]:
        params["fast"], params["slow"] = 12, 26
    output = draw(st.sampled_from(list(indicator.outputs)))
    return {"kind": "indicator", "name": name, "params": params, "output": output}


price_operands = st.sampled_from(PRICE_FIELDS).map(lambda f: {"kind": "price", "field": f})
volume_operands = st.just({"kind": "volume"})
const_operands = finite_numbers.map(lambda x: {"kind": "const", "value": x})
left_operands = st.one_of(indicator_operands(), price_operands, volume_operands)
right_operands = st.one_of(const_operands, indicator_operands(), price_operands, volume_operands)


@st.composite
def channels(draw: st.DrawFn) -> dict:
    if draw(st.booleans()):
        low, high = sorted((draw(finite_numbers), draw(finite_numbers)))
        return {
            "kind": "channel",
            "lower": {"kind": "const", "value": low},
            "upper": {"kind": "const", "value": high},
        }
    return {"kind": "channel", "lower": draw(left_operands), "upper": draw(right_operands)}


@st.composite
def operator_args(draw: st.DrawFn, op: str) -> dict:
    args: dict = {}
    for name in OPERATORS[op].args:
        if name in ("amount", "pct"):
            args[name] = draw(st.one_of(st.integers(0, 10_000).map(float), st.floats(0, 1e6)))
        elif name == "bars":
            args[name] = float(draw(st.one_of(st.just(1), st.integers(1, 1000))))
    if "pivot" in OPERATORS[op].args:
        pivot = draw(st.one_of(st.just(3), st.integers(1, 999)))
        args["pivot"] = float(pivot)
        args["lookback"] = float(
            draw(st.one_of(st.just(max(60, pivot + 1)), st.integers(pivot + 1, 1000)))
        )
    return args


@st.composite
def canonical_conditions(draw: st.DrawFn) -> dict:
    op = draw(st.sampled_from(list(OPERATORS)))
    condition = {
        "symbol": draw(st.text(SYMBOL_CHARS, min_size=2, max_size=20)),
        "timeframe": draw(st.sampled_from(list(TIMEFRAME_SPELLINGS))),
        "left": draw(left_operands),
        "op": op,
    }
    kind = OPERATORS[op].right
    if kind == "channel":
        condition["right"] = draw(channels())
    elif kind == "value":
        condition["right"] = draw(right_operands)
        if op == "crosses":
            order = [
                (KIND_ORDER[side["kind"]], as_float_json(side))
                for side in (condition["left"], condition["right"])
            ]
            if order[1] < order[0]:
                condition["left"], condition["right"] = condition["right"], condition["left"]
    if OPERATORS[op].args:
        condition["args"] = draw(operator_args(op))
    return condition


def spell_word(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from([word, word.lower(), word.upper(), word.title()]))


def spell_number(draw: st.DrawFn, value: float) -> object:
    choices: list[object] = [value, Decimal(repr(value))]
    if value.is_integer():
        choices.append(int(value))
    return draw(st.sampled_from(choices))


def spell_params(draw: st.DrawFn, name: str, params: dict) -> dict:
    spelled: dict = {}
    for param, value in params.items():
        spec = INDICATORS[name].params[param]
        if value == spec.default and draw(st.booleans()):
            continue
        key = draw(st.sampled_from(PARAM_SPELLINGS.get(param, [param])))
        if spec.kind == "source":
            spelled[key] = spell_word(draw, value)
        else:
            spelled[key] = spell_number(draw, float(value))
    return spelled


def spell_output(draw: st.DrawFn, name: str, output: str) -> str | None:
    indicator = INDICATORS[name]
    if output == indicator.default_output and draw(st.booleans()):
        return None
    return spell_word(draw, draw(st.sampled_from([output, *indicator.outputs[output]])))


def spell_indicator_name(draw: st.DrawFn, name: str) -> str:
    return spell_word(draw, draw(st.sampled_from([name, *INDICATORS[name].aliases])))


def spell_operator(draw: st.DrawFn, op: str) -> str:
    spelling = draw(st.sampled_from([op, *OPERATORS[op].aliases]))
    if spelling.isidentifier():
        spelling = spell_word(draw, spelling)
        if draw(st.booleans()):
            spelling = spelling.replace("_", " ")
    return spelling


def spell_canonical_operand(draw: st.DrawFn, operand: dict) -> object:
    kind = operand["kind"]
    if kind == "const":
        if draw(st.booleans()):
            return spell_number(draw, operand["value"])
        return {"kind": spell_word(draw, "const"), "value": spell_number(draw, operand["value"])}
    if kind == "price":
        if operand["field"] == "close" and draw(st.booleans()):
            return {"kind": "price"}
        return {"kind": "price", "field": spell_word(draw, operand["field"])}
    if kind == "volume":
        return draw(st.sampled_from([{"kind": "volume"}, {"kind": "indicator", "name": "volume"}]))
    if kind == "channel":
        return {
            "kind": "channel",
            "lower": spell_canonical_operand(draw, operand["lower"]),
            "upper": spell_canonical_operand(draw, operand["upper"]),
        }
    spelled = {"kind": "indicator", "name": spell_indicator_name(draw, operand["name"])}
    params = spell_params(draw, operand["name"], operand["params"])
    if params or draw(st.booleans()):
        spelled["params"] = params
    output = spell_output(draw, operand["name"], operand["output"])
    if output is not None:
        spelled["output"] = output
    return spelled


def spell_described_operand(draw: st.DrawFn, operand: dict) -> object:
    """An operand in the registry / alert shape."""
    kind = operand["kind"]
    if kind == "const":
        return spell_number(draw, operand["value"])
    if kind == "price":
        key = draw(st.sampled_from(["field", "priceField"]))
        spelled = {"type": "price"} if draw(st.booleans()) else {}
        if operand["field"] != "close" or not spelled or draw(st.booleans()):
            spelled[key] = spell_word(draw, operand["field"])
        return spelled
    if kind == "volume":
        return draw(st.sampled_from([{"type": "volume"}, {"indicator": "Volume"}]))
    if kind == "channel":
        return {
            "lower": spell_described_operand(draw, operand["lower"]),
            "upper": spell_described_operand(draw, operand["upper"]),
        }
    spelled: dict = {"indicator": spell_indicator_name(draw, operand["name"])}
    if draw(st.booleans()):
        spelled["type"] = spell_word(draw, "indicator")
    output = spell_output(draw, operand["name"], operand["output"])
    if output is not None:
        spelled[draw(st.sampled_from(["component", "output"]))] = output
    for key, value in spell_params(draw, operand["name"], operand["params"]).items():
        where = draw(st.sampled_from(["top", "settings", "params"]))
        if where == "top":
            spelled[key] = value
        else:
            spelled.setdefault(where, {})[key] = value
    return spelled


def spell_args(draw: st.DrawFn, op: str, args: dict) -> tuple[dict, dict]:
    """Arguments as (an args object, top-level keys)."""
    nested: dict = {}
    top: dict = {}
    for name, value in args.items():
        if value == ARG_DEFAULTS[op][name] and draw(st.booleans()):
            continue
        target = nested if draw(st.booleans()) else top
        target[name] = spell_number(draw, value)
    return nested, top


def place_symbol_and_timeframe(draw: st.DrawFn, raw: dict, condition: dict) -> dict:
    """Put symbol and timeframe in the condition or in the enclosing alert."""
    symbol = draw(st.sampled_from([condition["symbol"], condition["symbol"].lower()]))
    timeframe = draw(st.sampled_from(TIMEFRAME_SPELLINGS[condition["timeframe"]]))
    enclosing: dict = {}
    if draw(st.booleans()):
        raw["symbol"] = symbol
        if draw(st.booleans()):
            enclosing["symbol"] = "OTHER1"
    else:
        enclosing["symbol"] = symbol
    placement = draw(st.sampled_from(["own", "same", "absent"]))
    if placement == "own":
        raw["timeframe"] = timeframe
        if draw(st.booleans()):
            enclosing["timeframe"] = "3m" if condition["timeframe"] != "3m" else "5m"
    else:
        if placement == "same":
            raw["timeframe"] = draw(st.sampled_from(["same", "Same"]))
        enclosing["timeframe"] = timeframe
    return enclosing


@st.composite
def canonical_spellings(draw: st.DrawFn, condition: dict) -> tuple[dict, dict]:
    raw: dict = {
        "left": spell_canonical_operand(draw, condition["left"]),
        draw(st.sampled_from(["op", "operator"])): spell_operator(draw, condition["op"]),
    }
    if "right" in condition:
        right = condition["right"]
        if not (right == {"kind": "const", "value": 0.0} and draw(st.booleans())):
            raw["right"] = spell_canonical_operand(draw, right)
        if condition["op"] == "crosses" and "right" in raw and draw(st.booleans()):
            raw["left"], raw["right"] = raw["right"], raw["left"]
    if "args" in condition:
        # the canonical form has no top-level arguments: all go in "args"
        nested, top = spell_args(draw, condition["op"], condition["args"])
        raw["args"] = {**nested, **top}
    enclosing = place_symbol_and_timeframe(draw, raw, condition)
    return raw, enclosing


@st.composite
def described_spellings(draw: st.DrawFn, condition: dict) -> tuple[dict, dict]:
    """The registry, alert and short shapes, all written as flat objects."""
    raw = dict(spell_described_operand(draw, condition["left"]))  # type: ignore[arg-type]
    raw["operator"] = spell_operator(draw, condition["op"])
    right = condition.get("right")
    if right is not None:
        kind = right["kind"]
        compare_with = {
            "const": ["value"],
            "indicator": ["indicator_component"],
            "price": ["price"],
            "volume": ["volume"],
            "channel": ["channel"],
        }[kind]
        compare_with = draw(st.sampled_from([None, *compare_with]))
        if compare_with is not None:
            raw["compareWith"] = compare_with
        keys = ["value", "compareValue", "rhs"] + (["channel"] if kind == "channel" else [])
        omittable = (
            (compare_with is None and right == {"kind": "const", "value": 0.0})
            or (compare_with == "price" and right["field"] == "close")
            or compare_with == "volume"
        )
        if not (omittable and draw(st.booleans())):
            raw[draw(st.sampled_from(keys))] = spell_described_operand(draw, right)
    if "args" in condition:
        nested, top = spell_args(draw, condition["op"], condition["args"])
        raw.update(top)
        if nested or draw(st.booleans()):
            raw["args"] = nested
    enclosing = place_symbol_and_timeframe(draw, raw, condition)
    return raw, enclosing


def spellings(condition: dict) -> st.SearchStrategy[tuple[dict, dict]]:
    # A described shape has no way to put a constant on the left.
    if condition["left"]["kind"] == "const":
        return canonical_spellings(condition)
    return st.one_of(canonical_spellings(condition), described_spellings(condition))


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


def mutations(condition: dict) -> list[str]:
    found = ["symbol", "timeframe", "operator"]
    for side in ("left", "right"):
        operand = condition.get(side)
        if operand is None:
            continue
        if operand["kind"] == "const":
            found.append(f"{side}.threshold")
        if operand["kind"] == "indicator":
            found.append(f"{side}.param")
            if len(INDICATORS[operand["name"]].outputs) > 1:
                found.append(f"{side}.output")
            if "source" in operand["params"]:
                found.append(f"{side}.source")
        if operand["kind"] == "price":
            found.append(f"{side}.field")
    # crosses is symmetric: swapping its operands keeps the meaning
    swappable = OPERATORS[condition["op"]].right == "value" and condition["op"] != "crosses"
    if swappable and condition["left"] != condition["right"]:
        found.append("swap")
    if "args" in condition:
        found.append("args")
    return found


def different_param(draw: st.DrawFn, operand: dict) -> dict:
    name = operand["name"]
    params = dict(operand["params"])
    numeric = [p for p, spec in INDICATORS[name].params.items() if spec.kind != "source"]
    param = draw(st.sampled_from(numeric))
    spec = INDICATORS[name].params[param]
    low, high = spec.minimum, spec.maximum
    if name == "MACD":
        # keep fast < slow so the changed condition is still valid
        if param == "fast":
            high = params["slow"] - 1
        elif param == "slow":
            low = params["fast"] + 1
        if low >= high:
            param, low, high = "signal", 1, 1000
    values = st.integers(int(low), int(high)) if spec.kind == "int" else st.floats(low, high)
    params[param] = draw(values.filter(lambda v: v != operand["params"][param]))
    return {**operand, "params": params}


def different_args(draw: st.DrawFn, args: dict) -> dict:
    changed = dict(args)
    name = draw(st.sampled_from(list(args)))
    if name in ("amount", "pct"):
        changed[name] = draw(st.floats(0, 1e6).filter(lambda v: v != args[name]))
    elif name == "bars":
        changed[name] = float(draw(st.integers(1, 1000).filter(lambda v: v != args[name])))
    elif name == "lookback" and args["pivot"] < 999:
        lookbacks = st.integers(int(args["pivot"]) + 1, 1000)
        changed[name] = float(draw(lookbacks.filter(lambda v: v != args[name])))
    elif name == "pivot" and args["lookback"] > 2:
        pivots = st.integers(1, int(args["lookback"]) - 1)
        changed[name] = float(draw(pivots.filter(lambda v: v != args[name])))
    elif name == "lookback":  # pivot 999 leaves lookback only 1000
        changed["pivot"] -= 1.0
    else:  # lookback 2 leaves pivot only 1
        changed["lookback"] += 1.0
    return changed


@st.composite
def changed_meaning(draw: st.DrawFn, condition: dict) -> dict:
    changed = copy.deepcopy(condition)
    mutation = draw(st.sampled_from(mutations(condition)))
    side, _, aspect = mutation.partition(".")
    if mutation == "symbol":
        symbol = draw(st.text(SYMBOL_CHARS, min_size=2, max_size=20))
        if symbol == condition["symbol"]:
            symbol = symbol[:-1] + ("B" if symbol[-1] == "A" else "A")
        changed["symbol"] = symbol
    elif mutation == "timeframe":
        others = [tf for tf in TIMEFRAME_SPELLINGS if tf != condition["timeframe"]]
        changed["timeframe"] = draw(st.sampled_from(others))
    elif mutation == "operator":
        spec = OPERATORS[condition["op"]]
        alike = [
            name
            for name, other in OPERATORS.items()
            if other.right == spec.right and set(other.args) == set(spec.args)
        ]
        changed["op"] = draw(st.sampled_from([name for name in alike if name != condition["op"]]))
    elif mutation == "swap":
        changed["left"], changed["right"] = changed["right"], changed["left"]
    elif mutation == "args":
        changed["args"] = different_args(draw, condition["args"])
    else:
        operand = changed[side]
        if aspect == "threshold":
            operand["value"] = draw(finite_numbers.filter(lambda v: v != operand["value"]))
        elif aspect == "param":
            changed[side] = different_param(draw, operand)
        elif aspect == "output":
            outputs = [o for o in INDICATORS[operand["name"]].outputs if o != operand["output"]]
            operand["output"] = draw(st.sampled_from(outputs))
        elif aspect == "source":
            sources = [s for s in SOURCES if s != operand["params"]["source"]]
            operand["params"]["source"] = draw(st.sampled_from(sources))
        elif aspect == "field":
            fields = [f for f in PRICE_FIELDS if f != operand["field"]]
            operand["field"] = draw(st.sampled_from(fields))
    if changed["op"] == "crosses":
        order = [
            (KIND_ORDER[side["kind"]], as_float_json(side))
            for side in (changed["left"], changed["right"])
        ]
        if order[1] < order[0]:
            changed["left"], changed["right"] = changed["right"], changed["left"]
    return changed


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
