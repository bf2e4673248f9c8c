"""Conditions in their canonical form, and condition_id (CONDITIONS.md 1, 2, 4).

`normalize_condition` accepts every shape of section 1 and the canonical form
itself, and returns the canonical form; normalizing a canonical form returns
it unchanged. `condition_id` hashes a canonical form, so two conditions get
one id exactly when they normalize to the same dict.

Input, all shapes (keys whose value is null count as absent):

- Left operand, registry / alert / short shapes: the condition's own keys.
  `type` is indicator, price or volume (default: indicator when `indicator`
  is given, price when `field`/`priceField` is given). An indicator takes
  `indicator`, `component` (or `output`; default the indicator's default
  output), and parameters as top-level keys (`"period": 14`) and/or in
  `settings` / `params` objects. A price takes `field` or `priceField`
  (default close).
- Right-hand side: at most one of `value`, `compareValue`, `rhs`, `channel`.
  Each may be a number (a constant), an operand object as above (or a
  canonical operand with `kind`), or, for channel operators, a channel
  `{"lower": x, "upper": y}` whose bounds are numbers or operand objects.
  `channel` must hold a channel. `compareWith` (value, indicator_component,
  price, volume, channel) says what the right-hand side must be; for price and
  volume it may be omitted (close price, volume). With no right-hand side a
  comparison or cross compares with 0.
- Operator: `operator` (or `op`), any catalog alias; word aliases ignore case,
  spaces and hyphens ("Crosses Above").
- Operator arguments: an `args` object and/or top-level keys bars, amount,
  pct, pivot, lookback.
- `symbol` and `timeframe` of the condition win over the keyword arguments
  (the enclosing alert's or bot's); `timeframe: "same"` means the enclosing one.
- Canonical form: `left`, `op`, `right`, `args`, `symbol`, `timeframe`;
  operands as in section 2, missing params and output filled in.
- `id`, `label` and `description` at the top level are ignored; any other
  unknown key is an error naming it, since a misspelled parameter silently
  falling back to its default would change what the condition means.

Decisions where the spec is silent:

- Indicator VOLUME is raw volume, so it normalizes to `{"kind": "volume"}`.
- `crosses` is symmetric, so its operands are put in a fixed order
  (indicator, price, volume, constant; then by their JSON): `a crosses b` and
  `b crosses a` share an id. No other operator is reordered; `eq` is not
  symmetric because its tolerance scales with the right-hand side.
- Arguments: bars, pivot and lookback are whole numbers 1..1000 and lookback
  must exceed pivot (two pivots of the same type are more than `pivot` bars
  apart, so a shorter lookback could never fire); amount and pct are finite
  and >= 0. All arguments are floats in the canonical form.
- A channel with two constant bounds must have lower <= upper.
- MACD needs fast < slow. A parameter or argument given twice (say `period`
  and `settings.length`) must have one value.
- Two right-hand sides are an error even when `compareWith` picks one, and a
  right-hand side that is not what `compareWith` says is an error too;
  compareWith alone is ignored for operators without a right-hand side.
- -0.0 becomes 0.0, so it does not get an id of its own.
- canonical_json writes floats with Python's repr (30.0, 1e-07).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Mapping
from decimal import Decimal

import numpy as np

from conditions.engine.catalog import (
    INDICATORS,
    OPERATOR_ALIASES,
    OPERATORS,
    PARAM_ALIASES,
    PRICE_FIELDS,
    SOURCES,
    Indicator,
    Operator,
    Param,
)
from conditions.engine.errors import ConditionError
from conditions.engine.timeframes import normalize_timeframe

_SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,20}")
_NOT_GIVEN = "missing: neither the condition nor its alert or bot gives one"
_OPERATOR_LIST = ", ".join(OPERATORS)
_INDICATOR_LIST = ", ".join(INDICATORS)
_IGNORED_KEYS = frozenset(("id", "label", "description"))
_CANONICAL_KEYS = frozenset(("symbol", "timeframe", "left", "op", "operator", "right", "args"))
_ARG_NAMES = frozenset(name for op in OPERATORS.values() for name in op.args)
_RIGHT_KEYS = ("value", "compareValue", "rhs", "channel")
_CONDITION_KEYS = frozenset(
    ("symbol", "timeframe", "operator", "op", "compareWith", "args", *_RIGHT_KEYS, *_ARG_NAMES)
)
_BAR_COUNT_ARGS = frozenset(("bars", "pivot", "lookback"))
_MAX_BARS = 1000

_INDICATOR_NAMES: dict[str, Indicator] = {
    spelling.lower(): ind for ind in INDICATORS.values() for spelling in (ind.name, *ind.aliases)
}
_OPERATOR_NAMES: dict[str, str] = {alias.lower(): name for alias, name in OPERATOR_ALIASES.items()}
# compareWith -> (what the right-hand side may be, the type of an operand
# object that names none). VOLUME the indicator normalizes to a volume operand.
_COMPARE_WITH: dict[str, tuple[frozenset[str], str | None]] = {
    "value": (frozenset(("const", "channel")), None),
    "indicator_component": (frozenset(("indicator", "volume")), "indicator"),
    "price": (frozenset(("price",)), "price"),
    "volume": (frozenset(("volume",)), "volume"),
    "channel": (frozenset(("channel",)), None),
}
_KIND_ORDER = {"indicator": 0, "price": 1, "volume": 2, "const": 3}
_OPERAND_KEYS: dict[str, frozenset[str]] = {
    "indicator": frozenset(("kind", "name", "params", "output")),
    "price": frozenset(("kind", "field")),
    "volume": frozenset(("kind",)),
    "const": frozenset(("kind", "value")),
    "channel": frozenset(("kind", "lower", "upper")),
}


# --- public API ------------------------------------------------------------


def normalize_condition(
    raw: Mapping, *, symbol: str | None = None, timeframe: str | None = None
) -> dict:
    """The canonical form of `raw`; `symbol` and `timeframe` are the enclosing
    alert's or bot's, used when the condition has none of its own.

    Raises ConditionError naming the offending field (relative to `raw`).
    """
    given = _present(raw, "")
    for key in _IGNORED_KEYS:
        given.pop(key, None)
    if "left" in given:
        unknown = sorted(set(given) - _CANONICAL_KEYS)
        if unknown:
            raise ConditionError(unknown[0], "unknown key of a canonical condition")
        operator = _operator(given)
        left = _operand(given["left"], "left")
        right_field = "right"
        right = _operand(given["right"], "right") if "right" in given else None
        args = _args(operator, given.get("args"), {}, always_nested=True)
    else:
        operator = _operator(given)
        left = _described_operand(
            {key: value for key, value in given.items() if key not in _CONDITION_KEYS}, ""
        )
        right, right_field = _right_side(given, operator)
        top_level_args = {key: given[key] for key in _ARG_NAMES if key in given}
        args = _args(operator, given.get("args"), top_level_args, always_nested=False)

    canonical: dict = {
        "symbol": _symbol(given.get("symbol", symbol), "symbol"),
        "timeframe": _timeframe(given.get("timeframe"), timeframe),
    }
    canonical.update(_combine(left, operator, right, right_field))
    if args is not None:
        canonical["args"] = args
    return canonical


def canonical_json(canonical: Mapping) -> str:
    """`canonical` as JSON: sorted keys, no whitespace, every number a float."""
    return json.dumps(
        _with_float_numbers(canonical),
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )


def condition_id(canonical: Mapping) -> str:
    """SHA-256 hex digest of canonical_json; pass normalize_condition's result."""
    return hashlib.sha256(canonical_json(canonical).encode("utf-8")).hexdigest()


# --- scalars ---------------------------------------------------------------


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "null"
    return type(value).__name__


def _show(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def _number(value: object, field: str) -> float:
    if value is None:
        raise ConditionError(field, "missing: a number is required")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, Decimal)):
        raise ConditionError(field, f"must be a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ConditionError(field, "must be a finite number, got one too large") from None
    if not math.isfinite(number):
        raise ConditionError(field, f"must be a finite number, got {number}")
    # -0.0 would serialize as "-0.0" and split one condition into two ids.
    return number + 0.0


def _in_range(number: float, field: str, low: float, high: float) -> None:
    if not low <= number <= high:
        raise ConditionError(
            field,
            f"out of range: must be between {_show(low)} and {_show(high)}, got {_show(number)}",
        )


def _whole(value: object, field: str, low: float, high: float) -> int:
    number = _number(value, field)
    if not number.is_integer():
        raise ConditionError(field, f"must be a whole number, got {number!r}")
    _in_range(number, field, low, high)
    return int(number)


def _text(value: object, field: str) -> str:
    if value is None:
        raise ConditionError(field, "missing")
    if not isinstance(value, str):
        raise ConditionError(field, f"must be a string, got {_describe(value)}")
    return value


def _present(raw: object, field: str) -> dict:
    """The keys of an input object that carry a value (null means absent)."""
    if not isinstance(raw, Mapping):
        raise ConditionError(field, f"must be an object, got {_describe(raw)}")
    present = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConditionError(_at(field, str(key)), "keys must be strings")
        if value is not None:
            present[key] = value
    return present


def _symbol(value: object, field: str) -> str:
    if value is None:
        raise ConditionError(field, _NOT_GIVEN)
    symbol = _text(value, field).strip().upper()
    if not _SYMBOL_PATTERN.fullmatch(symbol):
        raise ConditionError(field, f"must be 2 to 20 letters or digits, got {value!r}")
    return symbol


def _timeframe(own: object, enclosing: str | None) -> str:
    same = own is None or (isinstance(own, str) and own.strip().lower() == "same")
    if not same:
        return normalize_timeframe(own, field="timeframe")
    if enclosing is None or (isinstance(enclosing, str) and enclosing.strip().lower() == "same"):
        raise ConditionError("timeframe", _NOT_GIVEN)
    return normalize_timeframe(enclosing, field="timeframe")


# --- operator and arguments --------------------------------------------------


def _operator(given: dict) -> Operator:
    if "op" in given and "operator" in given:
        raise ConditionError("op", "give op or operator, not both")
    field = "op" if "op" in given else "operator"
    spelling = _text(given.get(field), field)
    name = _OPERATOR_NAMES.get(re.sub(r"[\s-]+", "_", spelling.strip().lower()))
    if name is None:
        raise ConditionError(field, f"unknown operator {spelling!r} (one of {_OPERATOR_LIST})")
    return OPERATORS[name]


def _args(
    operator: Operator, nested: object, top_level: dict, *, always_nested: bool
) -> dict[str, float] | None:
    given: dict[str, tuple[str, object]] = {}
    if nested is not None:
        for key, value in _present(nested, "args").items():
            given[key.strip().lower()] = (f"args.{key}", value)
    for key, value in top_level.items():
        if key in given and _number(value, key) != _number(given[key][1], given[key][0]):
            raise ConditionError(key, f"given twice with different values (also {given[key][0]})")
        given.setdefault(key, (key, value))

    if not operator.args:
        if given:
            first_field = next(iter(given.values()))[0]
            raise ConditionError(first_field, f"{operator.name} takes no arguments")
        return None
    for name, (field, _) in given.items():
        if name not in operator.args:
            raise ConditionError(
                field,
                f"unknown argument of {operator.name} (arguments: {', '.join(operator.args)})",
            )

    prefix = "args." if always_nested or nested is not None else ""
    args: dict[str, float] = {}
    fields: dict[str, str] = {}
    for name, default in operator.args.items():
        field, value = given.get(name, (prefix + name, default))
        if value is None:
            raise ConditionError(field, f"missing: {operator.name} needs {name}")
        if name in _BAR_COUNT_ARGS:
            args[name] = float(_whole(value, field, 1, _MAX_BARS))
        else:
            args[name] = _number(value, field)
            if args[name] < 0:
                raise ConditionError(field, f"must not be negative, got {_show(args[name])}")
        fields[name] = field
    if "pivot" in args and "lookback" in args and args["lookback"] <= args["pivot"]:
        raise ConditionError(
            fields["lookback"],
            f"must be greater than pivot ({_show(args['pivot'])}): pivots of one type "
            "are more than pivot bars apart",
        )
    return args


# --- operands ----------------------------------------------------------------


def _operand(value: object, field: str, default_type: str | None = None) -> dict:
    """Any operand input: a number, a canonical operand, a channel or an
    operand object of the registry / alert shapes."""
    if value is None:
        raise ConditionError(field, "missing")
    if isinstance(value, Mapping):
        given = _present(value, field)
        if "kind" in given:
            return _canonical_operand(given, field)
        if "lower" in given or "upper" in given:
            return _channel(given, field)
        return _described_operand(given, field, default_type)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, Decimal)):
        raise ConditionError(field, f"must be a number or an operand, got {_describe(value)}")
    return {"kind": "const", "value": _number(value, field)}


def _bound(value: object, field: str) -> dict:
    operand = _operand(value, field)
    if operand["kind"] == "channel":
        raise ConditionError(field, "a channel bound cannot itself be a channel")
    return operand


def _channel(given: dict, field: str) -> dict:
    for key in given:
        if key not in _OPERAND_KEYS["channel"]:
            raise ConditionError(_at(field, key), "unknown key of a channel (lower, upper)")
    lower = _bound(given.get("lower"), _at(field, "lower"))
    upper = _bound(given.get("upper"), _at(field, "upper"))
    if lower["kind"] == "const" and upper["kind"] == "const" and lower["value"] > upper["value"]:
        raise ConditionError(
            _at(field, "lower"),
            f"must not be above upper ({_show(lower['value'])} > {_show(upper['value'])})",
        )
    return {"kind": "channel", "lower": lower, "upper": upper}


def _canonical_operand(given: dict, field: str) -> dict:
    kind = _text(given["kind"], _at(field, "kind")).strip().lower()
    if kind not in _OPERAND_KEYS:
        raise ConditionError(
            _at(field, "kind"),
            f"unknown operand kind {given['kind']!r} ({', '.join(_OPERAND_KEYS)})",
        )
    for key in given:
        if key not in _OPERAND_KEYS[kind]:
            raise ConditionError(_at(field, key), f"not a key of a {kind} operand")
    if kind == "indicator":
        params_field = _at(field, "params")
        params = _present(given.get("params", {}), params_field)
        return _indicator(
            given.get("name"),
            _at(field, "name"),
            given.get("output"),
            _at(field, "output"),
            [(_at(params_field, key), key, value) for key, value in params.items()],
        )
    if kind == "price":
        return _price(given.get("field", "close"), _at(field, "field"))
    if kind == "volume":
        return {"kind": "volume"}
    if kind == "const":
        return {"kind": "const", "value": _number(given.get("value"), _at(field, "value"))}
    return _channel({key: value for key, value in given.items() if key != "kind"}, field)


def _described_operand(given: dict, field: str, default_type: str | None = None) -> dict:
    """An operand in the registry / alert / short shapes (type, indicator,
    component, settings, field, ...)."""
    if "type" in given:
        spelling = _text(given["type"], _at(field, "type"))
        kind = spelling.strip().lower()
        if kind not in ("indicator", "price", "volume"):
            reason = f"unknown type {spelling!r} (indicator, price or volume)"
            raise ConditionError(_at(field, "type"), reason)
    elif "indicator" in given:
        kind = "indicator"
    elif "field" in given or "priceField" in given:
        kind = "price"
    elif default_type is not None:
        kind = default_type
    else:
        raise ConditionError(_at(field, "indicator"), "missing: an indicator, or type price/volume")

    if kind == "price":
        _reject_keys(given, field, {"type", "field", "priceField"}, "a price operand")
        if "field" in given and "priceField" in given:
            raise ConditionError(_at(field, "priceField"), "give field or priceField, not both")
        key = "priceField" if "priceField" in given else "field"
        return _price(given.get(key, "close"), _at(field, key))
    if kind == "volume":
        _reject_keys(given, field, {"type"}, "a volume operand")
        return {"kind": "volume"}

    for key in ("field", "priceField"):
        if key in given:
            raise ConditionError(_at(field, key), "not used by an indicator operand")
    if "component" in given and "output" in given:
        raise ConditionError(_at(field, "output"), "give component or output, not both")
    output_key = "output" if "output" in given else "component"
    params: list[tuple[str, str, object]] = []
    for container in ("settings", "params"):
        if container in given:
            nested_field = _at(field, container)
            for key, value in _present(given[container], nested_field).items():
                params.append((_at(nested_field, key), key, value))
    structural = {"type", "indicator", "component", "output", "settings", "params"}
    params.extend(
        (_at(field, key), key, value) for key, value in given.items() if key not in structural
    )
    return _indicator(
        given.get("indicator"),
        _at(field, "indicator"),
        given.get(output_key),
        _at(field, output_key),
        params,
    )


def _reject_keys(given: dict, field: str, allowed: set[str], what: str) -> None:
    for key in given:
        if key not in allowed:
            raise ConditionError(_at(field, key), f"not used by {what}")


def _price(value: object, field: str) -> dict:
    spelling = _text(value, field)
    price_field = spelling.strip().lower()
    if price_field not in PRICE_FIELDS:
        raise ConditionError(field, f"unknown price field {spelling!r} ({', '.join(PRICE_FIELDS)})")
    return {"kind": "price", "field": price_field}


# --- indicators --------------------------------------------------------------


def _indicator(
    name: object,
    name_field: str,
    output: object,
    output_field: str,
    params: list[tuple[str, str, object]],
) -> dict:
    """params: (field, key as given, value) for each parameter given."""
    spelling = _text(name, name_field)
    indicator = _INDICATOR_NAMES.get(spelling.strip().lower())
    if indicator is None:
        raise ConditionError(name_field, f"unknown indicator {spelling!r} ({_INDICATOR_LIST})")
    output_name = _output(indicator, output, output_field)
    values = _params(indicator, params, name_field)
    if indicator.name == "VOLUME":
        return {"kind": "volume"}
    return {"kind": "indicator", "name": indicator.name, "params": values, "output": output_name}


def _output(indicator: Indicator, output: object, field: str) -> str:
    if output is None:
        return indicator.default_output
    spelling = _text(output, field).strip().lower()
    for name, aliases in indicator.outputs.items():
        if spelling == name.lower() or spelling in (alias.lower() for alias in aliases):
            return name
    raise ConditionError(
        field,
        f"unknown output {output!r} of {indicator.name} (outputs: {', '.join(indicator.outputs)})",
    )


def _params(
    indicator: Indicator, given: list[tuple[str, str, object]], indicator_field: str
) -> dict:
    values: dict[str, int | float | str] = {}
    fields: dict[str, str] = {}
    for field, key, raw in given:
        name = key.strip().lower()
        name = PARAM_ALIASES.get(name, name)
        if name not in indicator.params:
            known = ", ".join(indicator.params) or "none"
            raise ConditionError(field, f"unknown parameter of {indicator.name} ({known})")
        value = _param_value(indicator.params[name], raw, field)
        if name in values and values[name] != value:
            raise ConditionError(field, f"given twice with different values (also {fields[name]})")
        values[name] = value
        fields[name] = field

    params: dict[str, int | float | str] = {}
    for name, spec in indicator.params.items():
        params[name] = values[name] if name in values else _param_default(spec)
    if indicator.name == "MACD" and params["fast"] >= params["slow"]:
        raise ConditionError(
            fields.get("fast", fields.get("slow", indicator_field)),
            f"fast ({params['fast']}) must be smaller than slow ({params['slow']})",
        )
    return params


def _param_default(spec: Param) -> int | float | str:
    if spec.kind == "int":
        return int(spec.default)
    if spec.kind == "float":
        return float(spec.default)
    return str(spec.default)


def _param_value(spec: Param, raw: object, field: str) -> int | float | str:
    if spec.kind == "int":
        return _whole(raw, field, spec.minimum, spec.maximum)
    if spec.kind == "float":
        number = _number(raw, field)
        _in_range(number, field, spec.minimum, spec.maximum)
        return number
    spelling = _text(raw, field)
    source = spelling.strip().lower()
    if source not in SOURCES:
        raise ConditionError(field, f"unknown source {spelling!r} ({', '.join(SOURCES)})")
    return source


# --- right-hand side and assembly --------------------------------------------


def _right_side(given: dict, operator: Operator) -> tuple[dict | None, str]:
    """The right operand of a registry / alert / short shape condition, and
    the field to blame when it is wrong or missing."""
    compare_with = None
    if "compareWith" in given:
        spelling = _text(given["compareWith"], "compareWith")
        compare_with = spelling.strip().lower().replace("-", "_")
        compare_with = "indicator_component" if compare_with == "indicator" else compare_with
        if compare_with not in _COMPARE_WITH:
            raise ConditionError(
                "compareWith", f"unknown compareWith {spelling!r} ({', '.join(_COMPARE_WITH)})"
            )
    keys = [key for key in _RIGHT_KEYS if key in given]
    if len(keys) > 1:
        raise ConditionError(keys[1], f"only one right-hand side may be given, {keys[0]} is one")
    default_field = "channel" if operator.right == "channel" else "value"

    if not keys:
        if compare_with is None or operator.right == "unary":
            return None, default_field
        if compare_with == "price":
            return {"kind": "price", "field": "close"}, "rhs"
        if compare_with == "volume":
            return {"kind": "volume"}, "rhs"
        missing_field = {"value": "compareValue", "indicator_component": "rhs"}.get(
            compare_with, "channel"
        )
        raise ConditionError(missing_field, f"missing: compareWith is {compare_with!r}")

    key = keys[0]
    allowed, default_type = _COMPARE_WITH[compare_with] if compare_with else (None, None)
    operand = _operand(given[key], key, default_type)
    if key == "channel" and operand["kind"] != "channel":
        raise ConditionError(key, 'must be a channel {"lower": ..., "upper": ...}')
    if allowed is not None and operand["kind"] not in allowed:
        raise ConditionError(
            key, f"is a {operand['kind']} operand but compareWith is {compare_with!r}"
        )
    return operand, key


def _order_key(operand: dict) -> tuple[int, str]:
    return _KIND_ORDER[operand["kind"]], canonical_json(operand)


def _combine(left: dict, operator: Operator, right: dict | None, right_field: str) -> dict:
    if left["kind"] == "channel":
        raise ConditionError("left", "a channel can only be the right-hand side")
    if operator.right == "unary":
        if right is not None:
            raise ConditionError(right_field, f"{operator.name} takes no right-hand side")
        return {"left": left, "op": operator.name}
    if operator.right == "channel":
        if right is None:
            raise ConditionError(
                right_field,
                f'missing: {operator.name} needs a channel {{"lower": ..., "upper": ...}}',
            )
        if right["kind"] != "channel":
            raise ConditionError(
                right_field,
                f'{operator.name} needs a channel {{"lower": ..., "upper": ...}}, '
                f"got a {right['kind']} operand",
            )
        return {"left": left, "op": operator.name, "right": right}
    if right is None:
        right = {"kind": "const", "value": 0.0}
    elif right["kind"] == "channel":
        raise ConditionError(right_field, f"{operator.name} compares with a value, not a channel")
    if operator.name == "crosses" and _order_key(right) < _order_key(left):
        left, right = right, left
    return {"left": left, "op": operator.name, "right": right}


def _with_float_numbers(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _with_float_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_float_numbers(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("a canonical condition holds no booleans")
    if isinstance(value, (numbers.Real, Decimal)):
        return float(value) + 0.0
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot serialize {type(value).__name__} in a canonical condition")
