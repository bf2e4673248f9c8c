"""The DCA bot's settings and arithmetic (BOTS.md): pure, no Django.

The workers, the API and the bot backtest share this module, so a setting
means the same thing and a ladder is priced the same way everywhere.

Money is Decimal throughout, in the default decimal context (28 significant
digits): a JSON number enters as Decimal(str(number)), so 1.1 is exactly 1.1.

Decisions where BOTS.md is silent:

- Required: base_order_size and take_profit, and safety_order_size when
  max_safety_orders > 0 (with no safety orders it may be left out: None).
  Every other field has the default in DCA_DEFAULTS (the API's defaults).
- active_safety_orders is 1..max_safety_orders, and 1 when there are none.
- fee_rate (a fraction, default 0.001 = 0.1% maker and taker) is accepted as
  an optional field, so that `to_json` round-trips and a backtest can model
  another exchange's fees; it must lie in [0, 0.05].
- Entry conditions must be on the bot's own symbol: the bot trades it, and a
  backtest has only its candles.
- Numbers have at most 18 decimal places and stay below 1e18 (the
  database's decimal(36, 18)).
- Safety orders must be at least 0.000001% apart (a step_scale below 1
  shrinks the steps geometrically); the error names step_scale, or
  price_deviation when the first step is already too small.
- A deviation that puts a safety order at or below zero is reported on
  max_safety_orders, with how many orders do fit.
- deviation_n is summed term by term (d + d*s + ... + d*s**(n-1)), which is
  the spec's closed form without its division, so it stays exact where the
  closed form would round (s = 0.7, for instance).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import pairwise

from conditions.engine.errors import ConditionError
from conditions.engine.playbook import NormalizedAlert, normalize_alert
from conditions.engine.timeframes import normalize_timeframe

ASAP = "asap"
TAKE_PROFIT_TYPES = ("average", "base")
SAFETY_MODES = ("triggered", "resting")
MAX_SAFETY_ORDERS = 100
MAX_ACTIVE_DEALS = 100
MAX_COOLDOWN_SECONDS = 30 * 86_400
MAX_FEE_RATE = Decimal("0.05")
HUNDRED = Decimal(100)
LARGEST = Decimal(10) ** 18
# Consecutive safety orders closer than this coincide on any exchange (and,
# far enough below it, in 28-digit arithmetic too).
MIN_STEP_PCT = Decimal("0.000001")

REQUIRED_FIELDS = ("base_order_size", "take_profit")
DCA_DEFAULTS: dict = {
    "entry": {"mode": ASAP},
    "safety_order_size": None,
    "max_safety_orders": 0,
    "active_safety_orders": 1,
    "price_deviation": "1",
    "step_scale": "1",
    "volume_scale": "1",
    "take_profit_type": "average",
    "trailing_deviation": None,
    "stop_loss": None,
    "cooldown": 0,
    "max_active_deals": 1,
    "safety_mode": "triggered",
    "fee_rate": "0.001",
}
# The settings table's order, which is also the order fields are checked in.
SETTING_FIELDS = (
    "entry",
    "base_order_size",
    "safety_order_size",
    "max_safety_orders",
    "active_safety_orders",
    "price_deviation",
    "step_scale",
    "volume_scale",
    "take_profit",
    "take_profit_type",
    "trailing_deviation",
    "stop_loss",
    "cooldown",
    "max_active_deals",
    "safety_mode",
    "fee_rate",
)
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")


class BotSettingsError(ValueError):
    """Invalid bot settings: `field` is a dotted path into what the client
    sent ("safety_order_size", "entry.conditions.0.indicator"), `reason` a
    sentence a trader can act on."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[BotSettingsError], tuple[str, str]]:
        # Celery pickles exceptions; the default would pass only the message.
        return (BotSettingsError, (self.field, self.reason))


@dataclass(frozen=True)
class DcaSettings:
    entry: dict  # the conditionConfig as given, or {"mode": "asap"}
    base_order_size: Decimal
    safety_order_size: Decimal | None  # None only when max_safety_orders == 0
    max_safety_orders: int
    active_safety_orders: int
    price_deviation: Decimal
    step_scale: Decimal
    volume_scale: Decimal
    take_profit: Decimal
    take_profit_type: str  # average | base
    trailing_deviation: Decimal | None
    stop_loss: Decimal | None
    cooldown: int  # seconds
    max_active_deals: int
    safety_mode: str  # triggered | resting
    fee_rate: Decimal = Decimal("0.001")

    @property
    def entry_is_asap(self) -> bool:
        return self.entry.get("mode") == ASAP

    def to_json(self) -> dict:
        """JSON-safe (Decimals as strings); validate_settings reads it back
        to an equal DcaSettings."""
        document = {}
        for name in SETTING_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = decimal_text(value)
            elif name == "entry":
                value = copy.deepcopy(value)
            document[name] = value
        return document


@dataclass(frozen=True)
class SafetyLevel:
    n: int  # 1-based
    deviation_pct: Decimal  # % below the base order's fill price
    price: Decimal
    quote: Decimal  # order size in quote


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain text without exponent or trailing zeros ("93", "0.0001")."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


# --- the ladder and the prices of a deal ------------------------------------------------
def _deviations(settings: DcaSettings) -> list[Decimal]:
    deviations, total = [], Decimal(0)
    for n in range(1, settings.max_safety_orders + 1):
        total += settings.price_deviation * settings.step_scale ** (n - 1)
        deviations.append(total)
    return deviations


def safety_ladder(settings: DcaSettings, base_price: Decimal) -> list[SafetyLevel]:
    """The safety orders of a deal whose base order filled at `base_price`:
    deviation_n = d * (1 - s**n) / (1 - s), price_n = P0 * (1 - deviation_n / 100),
    size_n = SO * v**(n - 1)."""
    levels = []
    for n, deviation in enumerate(_deviations(settings), start=1):
        price = base_price * (1 - deviation / HUNDRED)
        quote = settings.safety_order_size * settings.volume_scale ** (n - 1)
        levels.append(SafetyLevel(n=n, deviation_pct=deviation, price=price, quote=quote))
    return levels


def average_entry(quote_spent: Decimal, base_bought: Decimal) -> Decimal:
    """Quote spent including fees / base bought net of fees."""
    if base_bought <= 0:
        raise ValueError(
            "no base bought yet: a deal has no average entry before its base order fills"
        )
    return quote_spent / base_bought


def take_profit_price(settings: DcaSettings, average: Decimal, base_fill_price: Decimal) -> Decimal:
    reference = average if settings.take_profit_type == "average" else base_fill_price
    return reference * (1 + settings.take_profit / HUNDRED)


def stop_loss_price(settings: DcaSettings, average: Decimal) -> Decimal | None:
    if settings.stop_loss is None:
        return None
    return average * (1 - settings.stop_loss / HUNDRED)


def max_quote_per_deal(settings: DcaSettings) -> Decimal:
    """The base order plus every safety order: what one deal can spend."""
    total = settings.base_order_size
    for n in range(1, settings.max_safety_orders + 1):
        total += settings.safety_order_size * settings.volume_scale ** (n - 1)
    return total


def entry_alert(
    settings: DcaSettings, *, symbol: str, base_timeframe: str
) -> NormalizedAlert | None:
    """The entry conditionConfig as a playbook on the bot's market; None for asap."""
    if settings.entry_is_asap:
        return None
    return normalize_alert(
        {"conditionConfig": settings.entry}, symbol=symbol, base_timeframe=base_timeframe
    )


# --- validation -------------------------------------------------------------------------
def validate_settings(
    raw: Mapping,
    *,
    symbol: str,
    base_timeframe: str,
    available_quote: Decimal | None = None,
) -> DcaSettings:
    """The settings table of BOTS.md, checked field by field; raises
    BotSettingsError naming the first field that is wrong."""
    if not isinstance(raw, Mapping):
        raise BotSettingsError("settings", f"must be a JSON object, got {_describe(raw)}")
    unknown = [str(key) for key in raw if key not in SETTING_FIELDS]
    if unknown:
        others = f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""
        raise BotSettingsError(
            unknown[0], f"unknown field{others}; the settings are {', '.join(SETTING_FIELDS)}"
        )
    symbol = _bot_symbol(symbol)
    base_timeframe = _bot_timeframe(base_timeframe)
    given = {key: value for key, value in raw.items() if value is not None}
    for name in REQUIRED_FIELDS:
        if name not in given:
            raise BotSettingsError(name, "is required")

    def setting(name: str) -> object:
        return given.get(name, DCA_DEFAULTS.get(name))

    base_order_size = _decimal(setting("base_order_size"), "base_order_size")
    _above(base_order_size, "base_order_size", Decimal(0))
    max_safety_orders = _whole(
        setting("max_safety_orders"), "max_safety_orders", 0, MAX_SAFETY_ORDERS
    )
    safety_order_size = None
    if max_safety_orders > 0 or "safety_order_size" in given:
        if "safety_order_size" not in given:
            raise BotSettingsError(
                "safety_order_size", "is required when max_safety_orders is above 0"
            )
        safety_order_size = _decimal(given["safety_order_size"], "safety_order_size")
        _above(safety_order_size, "safety_order_size", Decimal(0))
    active_safety_orders = _whole(
        setting("active_safety_orders"), "active_safety_orders", 1, max(max_safety_orders, 1)
    )
    price_deviation = _decimal(setting("price_deviation"), "price_deviation")
    _strictly_between(price_deviation, "price_deviation", Decimal(0), HUNDRED)
    step_scale = _decimal(setting("step_scale"), "step_scale")
    _above(step_scale, "step_scale", Decimal(0), at_most=Decimal(10))
    volume_scale = _decimal(setting("volume_scale"), "volume_scale")
    _above(volume_scale, "volume_scale", Decimal(0), at_most=Decimal(10))
    take_profit = _decimal(setting("take_profit"), "take_profit")
    _above(take_profit, "take_profit", Decimal(0), at_most=Decimal(1000))
    take_profit_type = _choice(setting("take_profit_type"), "take_profit_type", TAKE_PROFIT_TYPES)
    trailing_deviation = None
    if "trailing_deviation" in given:
        trailing_deviation = _decimal(given["trailing_deviation"], "trailing_deviation")
        _strictly_between(trailing_deviation, "trailing_deviation", Decimal(0), take_profit)
    stop_loss = None
    if "stop_loss" in given:
        stop_loss = _decimal(given["stop_loss"], "stop_loss")
        _strictly_between(stop_loss, "stop_loss", Decimal(0), HUNDRED)
    cooldown = _whole(setting("cooldown"), "cooldown", 0, MAX_COOLDOWN_SECONDS)
    max_active_deals = _whole(setting("max_active_deals"), "max_active_deals", 1, MAX_ACTIVE_DEALS)
    safety_mode = _choice(setting("safety_mode"), "safety_mode", SAFETY_MODES)
    fee_rate = _decimal(setting("fee_rate"), "fee_rate")
    if not 0 <= fee_rate <= MAX_FEE_RATE:
        raise BotSettingsError(
            "fee_rate",
            f"must be a fraction between 0 and {MAX_FEE_RATE} (0.001 is 0.1%), got {decimal_text(fee_rate)}",
        )
    entry = _entry(given.get("entry"), symbol, base_timeframe)

    settings = DcaSettings(
        entry=entry,
        base_order_size=base_order_size,
        safety_order_size=safety_order_size,
        max_safety_orders=max_safety_orders,
        active_safety_orders=active_safety_orders,
        price_deviation=price_deviation,
        step_scale=step_scale,
        volume_scale=volume_scale,
        take_profit=take_profit,
        take_profit_type=take_profit_type,
        trailing_deviation=trailing_deviation,
        stop_loss=stop_loss,
        cooldown=cooldown,
        max_active_deals=max_active_deals,
        safety_mode=safety_mode,
        fee_rate=fee_rate,
    )
    _check_ladder_depth(settings)
    if available_quote is not None:
        _check_budget(settings, available_quote)
    return settings


def _check_ladder_depth(settings: DcaSettings) -> None:
    deviations = _deviations(settings)
    steps = [later - earlier for earlier, later in pairwise([Decimal(0), *deviations])]
    if steps and min(steps) < MIN_STEP_PCT:
        field = "price_deviation" if settings.price_deviation < MIN_STEP_PCT else "step_scale"
        raise BotSettingsError(
            field,
            f"safety orders would be less than {decimal_text(MIN_STEP_PCT)}% apart "
            f"(the step to safety order {steps.index(min(steps)) + 1} is "
            f"{min(steps):.3e}%): no exchange can tell such prices apart",
        )
    if deviations and deviations[-1] >= HUNDRED:
        fit = sum(1 for deviation in deviations if deviation < HUNDRED)
        raise BotSettingsError(
            "max_safety_orders",
            f"safety order {settings.max_safety_orders} would be {_percent(deviations[-1])}% "
            f"below the base order's price, at or below zero; with this price_deviation and "
            f"step_scale at most {fit} safety orders fit",
        )


def _check_budget(settings: DcaSettings, available_quote: Decimal) -> None:
    per_deal = max_quote_per_deal(settings)
    needed = per_deal * settings.max_active_deals
    if needed > available_quote:
        deals = (
            f" x {settings.max_active_deals} active deals = {decimal_text(needed)}"
            if settings.max_active_deals > 1
            else ""
        )
        raise BotSettingsError(
            "base_order_size",
            f"a deal can spend up to {decimal_text(per_deal)} (base order "
            f"{decimal_text(settings.base_order_size)} + {settings.max_safety_orders} safety "
            f"orders){deals}, more than the {decimal_text(available_quote)} available",
        )


def _entry(value: object, symbol: str, base_timeframe: str) -> dict:
    if value is None:
        return {"mode": ASAP}
    if not isinstance(value, Mapping):
        raise BotSettingsError(
            "entry", f'must be a conditionConfig or {{"mode": "asap"}}, got {_describe(value)}'
        )
    mode = value.get("mode")
    if isinstance(mode, str) and mode.strip().lower() == ASAP:
        extra = [str(key) for key in value if key != "mode"]
        if extra:
            raise BotSettingsError(f"entry.{extra[0]}", 'an asap entry is just {"mode": "asap"}')
        return {"mode": ASAP}
    try:
        # It also refuses a condition on another symbol than the bot's.
        normalize_alert({"conditionConfig": value}, symbol=symbol, base_timeframe=base_timeframe)
    except ConditionError as exc:
        raise BotSettingsError(_entry_field(exc.field), exc.reason) from None
    return copy.deepcopy(dict(value))


def _entry_field(field: str) -> str:
    """normalize_alert names fields from the alert; ours are from the bot."""
    head, _, rest = field.partition(".")
    if head == "conditionConfig":
        return f"entry.{rest}" if rest else "entry"
    return f"entry.{field}" if field else "entry"


def _bot_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol.strip().upper()):
        raise BotSettingsError("symbol", f"must be 2 to 20 letters or digits, got {symbol!r}")
    return symbol.strip().upper()


def _bot_timeframe(base_timeframe: object) -> str:
    try:
        return normalize_timeframe(base_timeframe, "base_timeframe")
    except ConditionError as exc:
        raise BotSettingsError(exc.field, exc.reason) from None


# --- field parsers ------------------------------------------------------------------------
def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _decimal(value: object, field: str) -> Decimal:
    """A JSON number or a decimal string, exactly: 0.1 is Decimal("0.1")."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool):
        raise BotSettingsError(field, "must be a number, got a boolean")
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BotSettingsError(field, f"must be a finite number, got {value}")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise BotSettingsError(field, f"must be a number, got {_describe(value)}")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise BotSettingsError(field, f"must be a number, got {_describe(value)}") from None
    else:
        raise BotSettingsError(field, f"must be a number, got {_describe(value)}")
    if not number.is_finite():
        raise BotSettingsError(field, f"must be a finite number, got {value}")
    # Bot amounts are stored as decimal(36, 18); bounding them here also keeps
    # "1e999999" from becoming a million-digit number in a message or a ladder.
    if abs(number) >= LARGEST:
        raise BotSettingsError(field, f"must be less than {LARGEST:.0e}, got {number:.6e}")
    if _decimal_places(number) > 18:
        raise BotSettingsError(field, f"at most 18 decimal places, got {number:.6e}")
    return number + 0  # -0 -> 0


def _decimal_places(number: Decimal) -> int:
    _, digits, exponent = number.as_tuple()
    text = "".join(map(str, digits))
    significant = text.rstrip("0")
    if not significant:
        return 0
    return max(0, -(exponent + len(text) - len(significant)))


def _whole(value: object, field: str, low: int, high: int) -> int:
    number = _decimal(value, field)
    if number != number.to_integral_value():
        raise BotSettingsError(field, f"must be a whole number, got {decimal_text(number)}")
    if not low <= number <= high:
        raise BotSettingsError(
            field, f"must be between {low} and {high}, got {decimal_text(number)}"
        )
    return int(number)


def _percent(value: Decimal) -> str:
    return decimal_text(value.quantize(Decimal("0.01"))) if abs(value) < 10**12 else f"{value:.3e}"


def _above(value: Decimal, field: str, low: Decimal, at_most: Decimal | None = None) -> None:
    if value <= low or (at_most is not None and value > at_most):
        bound = f" and at most {decimal_text(at_most)}" if at_most is not None else ""
        raise BotSettingsError(
            field, f"must be greater than {decimal_text(low)}{bound}, got {decimal_text(value)}"
        )


def _strictly_between(value: Decimal, field: str, low: Decimal, high: Decimal) -> None:
    if not low < value < high:
        raise BotSettingsError(
            field,
            f"must be greater than {decimal_text(low)} and less than {decimal_text(high)}, "
            f"got {decimal_text(value)}",
        )


def _choice(value: object, field: str, allowed: tuple[str, ...]) -> str:
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in allowed:
        raise BotSettingsError(field, f"must be one of {', '.join(allowed)}, got {value!r}")
    return text
