"""Generated users and alerts with the popularity real subscriptions have.

Traders do not pick conditions uniformly: most watch RSI(14) under 30, a
close crossing EMA(50) or a MACD histogram crossing 0, and a long tail watch
RSI(9) under 27. Every choice here (the shape of a condition, the indicator,
its parameters, its output, the threshold, the operator, the symbol) is drawn
from a list ordered by popularity with Zipf-like weights 1 / rank ** s, so
a few entries take most of the draws and every entry still occurs. That is
what makes shared evaluation pay: many alerts, far fewer distinct conditions
and indicator specs.

Everything is drawn from one `random.Random(seed)`: the same seed and sizes
give the same alerts on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conditions.engine.playbook import NormalizedAlert, normalize_alert
from conditions.engine.timeframes import TIMEFRAMES

from . import vocabulary as vocab
from .market import GeneratedMarket
from .vocabulary import Ranked


@dataclass(frozen=True)
class AlertSpec:
    """One generated alert, in the input shape of alerts.services.alert_input."""

    user: int
    raw: dict

    @property
    def symbol(self) -> str:
        return self.raw["symbol"]

    @property
    def base_timeframe(self) -> str:
        return self.raw["base_timeframe"]


@dataclass(frozen=True)
class ScenarioStats:
    alerts: int
    users: int
    pairs: int
    condition_references: int
    distinct_conditions: int
    distinct_indicator_specs: int


def generate_alerts(
    *,
    seed: int,
    users: int,
    alerts_per_user: int,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    reference_prices: Mapping[str, float],
    conditions_per_alert: int = vocab.CONDITIONS_PER_ALERT,
) -> list[AlertSpec]:
    """`users * alerts_per_user` alerts of `conditions_per_alert` conditions each.

    `timeframes` is in popularity order, finest to coarsest or not; a condition
    on another timeframe than its alert's is always on a coarser one, as a
    trend filter is. `reference_prices` gives each symbol's price level, from
    which price alerts set their levels.
    """
    if users < 1 or alerts_per_user < 1 or conditions_per_alert < 1:
        raise ValueError("users, alerts per user and conditions per alert must be at least 1")
    rng = random.Random(seed)
    ranked_symbols = Ranked(symbols, vocab.SYMBOL_EXPONENT)
    ranked_timeframes = Ranked(timeframes, 0.8)
    alerts = []
    for user in range(users):
        for _ in range(alerts_per_user):
            symbol = ranked_symbols.draw(rng)
            base = ranked_timeframes.draw(rng)
            conditions = [
                _condition(rng, reference_prices[symbol], _condition_timeframe(rng, base, timeframes))
                for _ in range(conditions_per_alert)
            ]  # fmt: skip
            alerts.append(
                AlertSpec(
                    user,
                    {
                        "symbol": symbol,
                        "base_timeframe": base,
                        "conditionConfig": _config(rng, conditions),
                        "fireMode": rng.choices(("per_bar_close", "once"), (85, 15))[0],
                    },
                )
            )
    return alerts


def generated_scenario(
    *,
    seed: int,
    users: int,
    symbols: int,
    timeframes: Sequence[str],
    earliest_cycle: int = -2,
) -> tuple[GeneratedMarket, list[AlertSpec]]:
    """A generated market, and one alert per user on its symbols at its
    prices: the scenario every part of the benchmark draws from `seed`."""
    market = GeneratedMarket(
        symbols=symbols, timeframes=timeframes, seed=seed, earliest_cycle=earliest_cycle
    )
    alerts = generate_alerts(
        seed=seed,
        users=users,
        alerts_per_user=1,
        symbols=market.symbols,
        timeframes=timeframes,
        reference_prices=market.reference_prices,
    )
    return market, alerts


def normalized(alerts: Sequence[AlertSpec]) -> list[NormalizedAlert]:
    return [normalize_alert(alert.raw) for alert in alerts]


def scenario_stats(
    alerts: Sequence[AlertSpec], playbooks: Sequence[NormalizedAlert]
) -> ScenarioStats:
    """How much the alerts share: distinct conditions are per (symbol,
    timeframe) by construction (both are in the condition id); an indicator
    spec is distinct per symbol, timeframe, name and parameters, as the plan
    computes it."""
    conditions: set[str] = set()
    specs: set[tuple] = set()
    references = 0
    for playbook in playbooks:
        for step in playbook.steps:
            references += 1
            conditions.add(step.condition_id)
            canonical = step.canonical
            for operand in _operands(canonical):
                if operand["kind"] == "indicator":
                    params = tuple(sorted((key, float(value) if isinstance(value, int | float) else value)
                                          for key, value in operand["params"].items()))  # fmt: skip
                    specs.add(
                        (canonical["symbol"], canonical["timeframe"], operand["name"], params)
                    )
    return ScenarioStats(
        alerts=len(alerts),
        users=len({alert.user for alert in alerts}),
        pairs=len({(alert.symbol, alert.base_timeframe) for alert in alerts}),
        condition_references=references,
        distinct_conditions=len(conditions),
        distinct_indicator_specs=len(specs),
    )


def _operands(canonical: Mapping) -> list[Mapping]:
    operands = [canonical["left"]]
    right = canonical.get("right")
    if right is not None:
        operands.extend(
            (right["lower"], right["upper"]) if right["kind"] == "channel" else (right,)
        )
    return operands


# --- drawing ---------------------------------------------------------------------------


def _condition_timeframe(rng: random.Random, base: str, timeframes: Sequence[str]) -> str:
    coarser = [tf for tf in timeframes if TIMEFRAMES.index(tf) > TIMEFRAMES.index(base)]
    if coarser and rng.random() < vocab.OTHER_TIMEFRAME_SHARE:
        return rng.choice(coarser)
    return "same"


def _indicator(rng: random.Random, name: str, output: str | None = None) -> dict:
    return {
        "indicator": name,
        "component": output or "value",
        "settings": dict(vocab.PARAMS[name].draw(rng)),
    }


def _condition(rng: random.Random, price: float, timeframe: str) -> dict:
    shape = rng.choices([name for name, _ in vocab.SHAPES], [weight for _, weight in vocab.SHAPES])[
        0
    ]
    condition = _DRAW[shape](rng, price)
    condition["timeframe"] = timeframe
    return condition


def _operator_for(rng: random.Random, level: float, middle: float) -> str:
    if level == middle:
        return vocab.CROSS_OPERATORS.draw(rng)
    return (vocab.BELOW_OPERATORS if level < middle else vocab.ABOVE_OPERATORS).draw(rng)


def _threshold(rng: random.Random, price: float) -> dict:
    name, output = vocab.THRESHOLD_OPERANDS.draw(rng)
    levels, middle = vocab.THRESHOLDS[(name, output)]
    level = levels.draw(rng)
    return {
        **_indicator(rng, name, output),
        "operator": _operator_for(rng, level, middle),
        "compareWith": "value",
        "compareValue": level,
    }


def _price_vs_average(rng: random.Random, price: float) -> dict:
    name, output = vocab.AVERAGES.draw(rng)
    return {
        "type": "price",
        "priceField": vocab.PRICE_FIELDS.draw(rng),
        "operator": vocab.CROSS_OPERATORS.draw(rng),
        "compareWith": "indicator_component",
        "rhs": _indicator(rng, name, output),
    }


def _price_level(rng: random.Random, price: float) -> dict:
    offset = vocab.PRICE_OFFSETS_PCT.draw(rng)
    level = price * (1 + offset / 100)
    return {
        "type": "price",
        "operator": _operator_for(rng, offset, 0),
        "compareWith": "value",
        "compareValue": float(f"{level:.4g}"),
    }


def _paired_lines(rng: random.Random, price: float) -> dict:
    name, left_output, right_output = vocab.PAIRED_LINES.draw(rng)
    if left_output is None:
        # Two moving averages: the faster one on the left.
        fast = vocab.PARAMS[name].draw(rng)["length"]
        slow = vocab.PARAMS[name].draw(rng)["length"]
        if slow == fast:
            slow = fast * 2
        fast, slow = min(fast, slow), max(fast, slow)
        left = {"indicator": name, "settings": {"length": fast}}
        right = {"indicator": name, "settings": {"length": slow}}
    else:
        settings = dict(vocab.PARAMS[name].draw(rng))
        left = {"indicator": name, "component": left_output, "settings": settings}
        right = {"indicator": name, "component": right_output, "settings": settings}
    return {
        **left,
        "operator": vocab.CROSS_OPERATORS.draw(rng),
        "compareWith": "indicator_component",
        "rhs": right,
    }


def _channel(rng: random.Random, price: float) -> dict:
    name = vocab.CHANNEL_INDICATORS.draw(rng)
    lower, upper = vocab.CHANNELS.draw(rng)
    return {
        **_indicator(rng, name, "k" if name == "STOCH" else "value"),
        "operator": vocab.CHANNEL_OPERATORS.draw(rng),
        "channel": {"lower": lower, "upper": upper},
    }


def _movement(rng: random.Random, price: float) -> dict:
    operand = vocab.MOVEMENT_OPERANDS.draw(rng)
    bars = vocab.MOVEMENT_BARS.draw(rng)
    direction = rng.choice(("up", "down"))
    if operand == "RSI":
        return {
            **_indicator(rng, "RSI"),
            "operator": f"moving_{direction}",
            "bars": bars,
            "amount": vocab.MOVEMENT_AMOUNTS.draw(rng),
        }
    left = (
        _indicator(rng, "ATR")
        if operand == "ATR"
        else {"type": "price"}
        if operand == "close"
        else {"type": "volume"}
    )
    return {
        **left,
        "operator": f"moving_{direction}_pct",
        "bars": bars,
        "pct": vocab.MOVEMENT_PCT.draw(rng),
    }


def _divergence(rng: random.Random, price: float) -> dict:
    name, output = vocab.DIVERGENCE_INDICATORS.draw(rng)
    return {
        **_indicator(rng, name, output),
        "operator": vocab.DIVERGENCE_OPERATORS.draw(rng),
        "pivot": vocab.PIVOTS.draw(rng),
        "lookback": vocab.LOOKBACKS.draw(rng),
    }


def _volume_spike(rng: random.Random, price: float) -> dict:
    return {
        "type": "volume",
        "operator": vocab.CROSS_OPERATORS.draw(rng),
        "compareWith": "indicator_component",
        "rhs": {"indicator": "SMA", "settings": {"length": vocab.PARAMS["SMA"].draw(rng)["length"], "source": "volume"}},
    }  # fmt: skip


_DRAW = {
    "threshold": _threshold,
    "price_vs_average": _price_vs_average,
    "price_level": _price_level,
    "paired_lines": _paired_lines,
    "channel": _channel,
    "movement": _movement,
    "divergence": _divergence,
    "volume_spike": _volume_spike,
}


def _config(rng: random.Random, conditions: list[dict]) -> dict:
    mode = rng.choices(("AND", "OR", "playbook"), (55, 15, 30))[0]
    if mode != "playbook":
        return {"mode": "simple", "logic": mode, "conditions": conditions}
    config: dict = {
        "mode": "playbook",
        "evaluationOrder": rng.choices(("priority", "sequential"), (75, 25))[0],
        "conditions": [
            {
                "condition": condition,
                "priority": rng.randint(1, len(conditions)),
                "logic": rng.choices(("AND", "OR"), (70, 30))[0],
                "validityDuration": vocab.VALIDITY_BARS.draw(rng),
                "validityDurationUnit": "bars",
            }
            for condition in conditions
        ],
    }
    gate = rng.choices(("ALL", "ANY", None), (50, 20, 30))[0]
    if gate is not None:
        config["gateLogic"] = gate
    return config
