"""Hypothesis strategies for condition normalization tests.

They draw a meaning as the canonical form a test expects, then write it the
way a client might: any shape, any alias, defaults left out or spelled out,
ints for whole floats (`spellings`); or change one thing that changes its
truth (`changed_meaning`).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal

from hypothesis import strategies as st

from conditions.engine.catalog import INDICATORS, OPERATORS, PRICE_FIELDS, SOURCES

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
