"""The vocabulary of the condition language: indicators, their parameters and
outputs, operators and their arguments (CONDITIONS.md sections 3 and 4).

Normalization, indicator computation and operator evaluation all read these
tables, so a name means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRICE_FIELDS = ("open", "high", "low", "close")
SOURCES = ("open", "high", "low", "close", "volume")

MIN_LENGTH = 1
MAX_LENGTH = 1000


@dataclass(frozen=True)
class Param:
    """One indicator parameter: its default and the values it accepts."""

    default: int | float | str
    kind: str = "int"  # int | float | source
    minimum: float = MIN_LENGTH
    maximum: float = MAX_LENGTH


@dataclass(frozen=True)
class Indicator:
    name: str
    params: dict[str, Param]
    # canonical output name -> accepted aliases (matched case-insensitively)
    outputs: dict[str, tuple[str, ...]]
    default_output: str
    aliases: tuple[str, ...] = ()


def _length(default: int) -> Param:
    return Param(default)


_SOURCE = Param("close", kind="source")

INDICATORS: dict[str, Indicator] = {
    ind.name: ind
    for ind in (
        Indicator("RSI", {"length": _length(14)}, {"value": ("RSI",)}, "value"),
        Indicator(
            "SMA",
            {"length": _length(20), "source": _SOURCE},
            {"value": ("SMA", "MA")},
            "value",
            aliases=("MA",),
        ),
        Indicator(
            "EMA",
            {"length": _length(20), "source": _SOURCE},
            {"value": ("EMA",)},
            "value",
        ),
        Indicator(
            "MACD",
            {"fast": _length(12), "slow": _length(26), "signal": _length(9)},
            {"macd": ("MACD", "line"), "signal": (), "histogram": ("hist",)},
            "macd",
        ),
        Indicator(
            "BBANDS",
            {"length": _length(20), "std": Param(2.0, kind="float", minimum=0.001, maximum=50.0)},
            {"lower": (), "middle": (), "upper": (), "bandwidth": (), "percent_b": ()},
            "middle",
            aliases=("BB", "BOLLINGER"),
        ),
        Indicator(
            "STOCH",
            {"k": _length(14), "d": _length(3), "smooth_k": _length(3)},
            {"k": (), "d": ()},
            "k",
            aliases=("STOCHASTIC",),
        ),
        Indicator("ATR", {"length": _length(14)}, {"value": ("ATR",)}, "value"),
        Indicator("MFI", {"length": _length(14)}, {"value": ("MFI",)}, "value"),
        Indicator("CCI", {"length": _length(20)}, {"value": ("CCI",)}, "value"),
        Indicator("VOLUME", {}, {"value": ("VOLUME",)}, "value"),
    )
}

# Parameter aliases accepted on input, for every indicator.
PARAM_ALIASES: dict[str, str] = {"period": "length", "stddev": "std"}


@dataclass(frozen=True)
class Operator:
    name: str
    aliases: tuple[str, ...] = ()
    # argument name -> default; None means the argument is required
    args: dict[str, float | None] = field(default_factory=dict)
    # "value": compares left with right; "channel": right is a channel;
    # "unary": no right-hand side at all (movement, divergence)
    right: str = "value"


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("gt", (">", "above")),
        Operator("gte", (">=",)),
        Operator("lt", ("<", "below")),
        Operator("lte", ("<=",)),
        Operator("eq", ("==", "equals")),
        Operator("crosses_above", ("cross_above", "crossover")),
        Operator("crosses_below", ("cross_below", "crossunder")),
        Operator("crosses"),
        Operator("inside_channel", right="channel"),
        Operator("outside_channel", right="channel"),
        Operator("entering_channel", right="channel"),
        Operator("exiting_channel", right="channel"),
        Operator("moving_up", args={"bars": 1.0, "amount": None}, right="unary"),
        Operator("moving_down", args={"bars": 1.0, "amount": None}, right="unary"),
        Operator("moving_up_pct", args={"bars": 1.0, "pct": None}, right="unary"),
        Operator("moving_down_pct", args={"bars": 1.0, "pct": None}, right="unary"),
        Operator("bullish_divergence", args={"pivot": 3.0, "lookback": 60.0}, right="unary"),
        Operator("bearish_divergence", args={"pivot": 3.0, "lookback": 60.0}, right="unary"),
        Operator("divergence", args={"pivot": 3.0, "lookback": 60.0}, right="unary"),
        Operator("convergence", args={"pivot": 3.0, "lookback": 60.0}, right="unary"),
    )
}


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for op in OPERATORS.values():
        table[op.name] = op.name
        for alias in op.aliases:
            table[alias] = op.name
    return table


OPERATOR_ALIASES: dict[str, str] = _alias_table()
