"""The bot backtest (BOTS.md "Bot backtest"): a DCA bot's settings run bar by
bar over historical candles, with the DCA arithmetic of bots.dca and the
paper exchange's fills of bots.fills. Pure: no Django.

What happens in one bar, for each deal opened at an earlier close:

1. Resting orders, walked along the bar's path (open, low, high, close when
   close >= open, else open, high, low, close): a resting safety buy fills at
   its price once the path reaches it, the take-profit sell at its price once
   the path reaches it (maker fee). A trailing take profit starts once the
   path reaches the take-profit price and tracks the highest price since.
2. At the close: triggered safety levels whose "close crosses below price_n"
   holds fill at the close (taker fee); after any safety fill the take profit
   is re-priced from the new average (which resets a trailing take profit) and,
   in resting mode, the next levels are placed; a trailing take profit exits
   at the close when the close is at or below the highest price since it
   started, less trailing_deviation %; then the stop loss is checked against
   the new average.

Then a new deal may open at the close (entry signal, max_active_deals,
cooldown). Orders placed at a close fill from the next bar on.

Decisions where BOTS.md is silent:

- A take-profit fill ends the deal at once: its resting safety buys are
  cancelled and do not fill later in the same bar.
- A resting safety fill cancels the take-profit sell at once (it was sized
  for the smaller position, and its price is stale); the re-priced one is
  placed at that bar's close and can fill from the next bar. So in one bar
  either the take profit fills first (the path reaches the high first) or the
  safety buy does, never both.
- A trailing exit and a stop loss at the same close (same price) count as
  take_profit: the take-profit step comes first.
- Deals open at the end have closed_at, close_reason, pnl_quote and pnl_pct
  null, and count in summary.deals but not in summary.wins or pnl_quote.
- max_quote_committed is the most quote tied up at once: spent by open deals
  plus, in resting mode, locked in their resting safety buys.
- At most one deal opens per bar (one entry signal opens one deal).
- Output: times are bar open times in ISO-8601 UTC; prices, quantities,
  quotes, fees and P&L are decimal strings (exact, no exponent). Order legs
  are base, so1..soN, tp (a take-profit fill, or a trailing exit at market)
  and sl.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

from conditions.engine.backtest import CandleSet, candles_by_timeframe, iso_utc
from conditions.engine.candles import CandleFileError
from conditions.engine.plan import EvaluationPlan
from conditions.engine.playbook import NormalizedAlert, alert_signal, fire_bars
from conditions.engine.timeframes import normalize_timeframe

from .dca import (
    HUNDRED,
    BotSettingsError,
    DcaSettings,
    SafetyLevel,
    average_entry,
    decimal_text,
    entry_alert,
    safety_ladder,
    stop_loss_price,
    take_profit_price,
    validate_settings,
)
from .fills import Fill, intrabar_path, limit_buy, limit_sell, market_buy, market_sell

BOT_FIELDS = ("name", "kind", "symbol", "base_timeframe")
TAKE_PROFIT = "take_profit"
STOP_LOSS = "stop_loss"


@dataclass(frozen=True)
class BacktestBot:
    name: str | None
    symbol: str
    base_timeframe: str
    settings: DcaSettings

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": "dca",
            "symbol": self.symbol,
            "base_timeframe": self.base_timeframe,
            **self.settings.to_json(),
        }


def read_bot(
    document: Mapping, *, default_symbol: str | None = None, default_timeframe: str | None = None
) -> BacktestBot:
    """BOT.json: the settings table as flat fields plus symbol and
    base_timeframe (taken from the candle file when left out), name and kind
    optional."""
    if not isinstance(document, Mapping):
        raise BotSettingsError("bot", "must be a JSON object")
    name = document.get("name")
    if name is not None and not isinstance(name, str):
        raise BotSettingsError("name", "must be a string")
    kind = document.get("kind")
    if kind is not None and kind != "dca":
        raise BotSettingsError("kind", f"only dca bots can be backtested, got {kind!r}")
    symbol = document.get("symbol", default_symbol)
    if symbol is None:
        raise BotSettingsError("symbol", "is required")
    base_timeframe = document.get("base_timeframe", default_timeframe)
    if base_timeframe is None:
        raise BotSettingsError("base_timeframe", "is required")
    raw = {key: value for key, value in document.items() if key not in BOT_FIELDS}
    settings = validate_settings(raw, symbol=symbol, base_timeframe=base_timeframe)
    # validate_settings has checked both; it keeps their normal spelling.
    symbol = symbol.strip().upper()
    base_timeframe = normalize_timeframe(base_timeframe, "base_timeframe")
    return BacktestBot(name, symbol, base_timeframe, settings)


# --- one deal ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FilledOrder:
    leg: str  # base, so1.., tp, sl
    fill: Fill
    filled_ms: int  # open time of the bar it filled in

    def to_json(self) -> dict:
        return {
            "leg": self.leg,
            "side": self.fill.side,
            "price": decimal_text(self.fill.price),
            "quantity": decimal_text(self.fill.quantity),
            "quote": decimal_text(self.fill.quote),
            "fee": decimal_text(self.fill.fee),
            "filled_at": iso_utc(self.filled_ms),
        }


@dataclass
class SimulatedDeal:
    opened_ms: int
    base_price: Decimal
    ladder: list[SafetyLevel]
    orders: list[FilledOrder] = field(default_factory=list)
    quote_spent: Decimal = Decimal(0)  # gross, fees included (they come out of the base)
    base_held: Decimal = Decimal(0)  # net of fees
    quote_received: Decimal = Decimal(0)  # net of fees
    safety_filled: int = 0
    resting_end: int = 0  # resting mode: ladder[safety_filled:resting_end] rest on the exchange
    take_profit: Decimal | None = None  # the take-profit price in force; None while withdrawn
    trailing_high: Decimal | None = None  # set once a trailing take profit has started
    closed_ms: int | None = None
    close_reason: str | None = None

    @property
    def average(self) -> Decimal:
        return average_entry(self.quote_spent, self.base_held)

    @property
    def resting_quote(self) -> Decimal:
        return sum(
            (level.quote for level in self.ladder[self.safety_filled : self.resting_end]),
            Decimal(0),
        )

    def buy(self, leg: str, fill: Fill, bar_ms: int) -> None:
        self.orders.append(FilledOrder(leg, fill, bar_ms))
        self.quote_spent += fill.net_quote
        self.base_held += fill.net_base

    def close(self, leg: str, fill: Fill, bar_ms: int, reason: str) -> None:
        self.orders.append(FilledOrder(leg, fill, bar_ms))
        self.quote_received = fill.net_quote
        self.base_held -= fill.quantity
        self.closed_ms = bar_ms
        self.close_reason = reason

    @property
    def pnl_quote(self) -> Decimal | None:
        return None if self.closed_ms is None else self.quote_received - self.quote_spent

    def to_json(self) -> dict:
        pnl = self.pnl_quote
        return {
            "opened_at": iso_utc(self.opened_ms),
            "closed_at": None if self.closed_ms is None else iso_utc(self.closed_ms),
            "close_reason": self.close_reason,
            "orders": [order.to_json() for order in self.orders],
            "pnl_quote": None if pnl is None else decimal_text(pnl),
            "pnl_pct": None if pnl is None else decimal_text(pnl / self.quote_spent * HUNDRED),
        }


@dataclass(frozen=True)
class Bar:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


# --- the bar loop ------------------------------------------------------------------------
@dataclass
class Simulation:
    """All deals of one bot over one candle series, in the order they opened."""

    settings: DcaSettings
    deals: list[SimulatedDeal] = field(default_factory=list)
    open_deals: list[SimulatedDeal] = field(default_factory=list)
    last_close_ms: int | None = None
    max_quote_committed: Decimal = Decimal(0)

    def run(self, candles: pd.DataFrame, entries: np.ndarray) -> Simulation:
        """`candles`: a candle frame (open_time in ms); `entries`: whether the
        entry fires at each bar's close."""
        times = candles["open_time"].to_numpy(dtype=np.int64).tolist()
        # Prices enter as Decimal(str(float)): the shortest text of the float.
        opens, highs, lows, closes = (
            [Decimal(str(price)) for price in candles[column].to_numpy(dtype=np.float64).tolist()]
            for column in ("open", "high", "low", "close")
        )
        wants_entry = np.asarray(entries, dtype=bool).tolist()
        previous_close = None
        for index, open_ms in enumerate(times):
            bar = Bar(open_ms, opens[index], highs[index], lows[index], closes[index])
            for deal in list(self.open_deals):
                self._trade_bar(deal, bar, previous_close)
                if deal.closed_ms is not None:
                    self.open_deals.remove(deal)
                    self.last_close_ms = open_ms
            if wants_entry[index] and self._may_open(open_ms):
                self._open(bar)
            previous_close = bar.close
        return self

    def _may_open(self, open_ms: int) -> bool:
        if len(self.open_deals) >= self.settings.max_active_deals:
            return False
        return (
            self.last_close_ms is None
            or open_ms - self.last_close_ms >= self.settings.cooldown * 1000
        )

    def _open(self, bar: Bar) -> None:
        settings = self.settings
        fill = market_buy(settings.base_order_size, bar.close, settings.fee_rate)
        deal = SimulatedDeal(
            opened_ms=bar.open_ms, base_price=fill.price, ladder=safety_ladder(settings, fill.price)
        )
        deal.buy("base", fill, bar.open_ms)
        deal.take_profit = take_profit_price(settings, deal.average, deal.base_price)
        if settings.safety_mode == "resting":
            deal.resting_end = min(settings.active_safety_orders, len(deal.ladder))
        self.deals.append(deal)
        self.open_deals.append(deal)
        self._track_commitment()

    def _track_commitment(self) -> None:
        committed = sum(
            (deal.quote_spent + deal.resting_quote for deal in self.open_deals), Decimal(0)
        )
        self.max_quote_committed = max(self.max_quote_committed, committed)

    def _trade_bar(self, deal: SimulatedDeal, bar: Bar, previous_close: Decimal | None) -> None:
        filled_before = deal.safety_filled
        self._walk_resting_orders(deal, bar)
        if deal.closed_ms is not None:
            return
        settings = self.settings
        if settings.safety_mode == "triggered" and previous_close is not None:
            while deal.safety_filled < len(deal.ladder):
                level = deal.ladder[deal.safety_filled]
                if not (bar.close < level.price <= previous_close):
                    break  # lower levels cannot cross while this one has not
                deal.buy(
                    f"so{level.n}",
                    market_buy(level.quote, bar.close, settings.fee_rate),
                    bar.open_ms,
                )
                deal.safety_filled += 1
        if deal.safety_filled > filled_before:
            deal.take_profit = take_profit_price(settings, deal.average, deal.base_price)
            deal.trailing_high = None
            if settings.safety_mode == "resting":
                deal.resting_end = min(
                    deal.safety_filled + settings.active_safety_orders, len(deal.ladder)
                )
            self._track_commitment()
        if deal.trailing_high is not None and bar.close <= deal.trailing_high * (
            1 - settings.trailing_deviation / HUNDRED
        ):
            deal.close(
                "tp",
                market_sell(deal.base_held, bar.close, settings.fee_rate),
                bar.open_ms,
                TAKE_PROFIT,
            )
            return
        stop = stop_loss_price(settings, deal.average)
        if stop is not None and bar.close <= stop:
            deal.close(
                "sl",
                market_sell(deal.base_held, bar.close, settings.fee_rate),
                bar.open_ms,
                STOP_LOSS,
            )

    def _walk_resting_orders(self, deal: SimulatedDeal, bar: Bar) -> None:
        """Fills of the orders resting since an earlier close, in the order the
        bar's path reaches them. Price moves monotonically between path points,
        so an order is reached at the first point at or beyond its price."""
        settings = self.settings
        trailing = settings.trailing_deviation is not None
        for point in intrabar_path(bar.open, bar.high, bar.low, bar.close):
            while (
                deal.safety_filled < deal.resting_end
                and deal.ladder[deal.safety_filled].price >= point
            ):
                level = deal.ladder[deal.safety_filled]
                # Sized in base when placed, as the paper exchange takes limit orders.
                fill = limit_buy(level.quote / level.price, level.price, settings.fee_rate)
                deal.buy(f"so{level.n}", fill, bar.open_ms)
                deal.safety_filled += 1
                deal.take_profit = None
            if deal.take_profit is None:
                continue
            if trailing:
                if deal.trailing_high is not None or point >= deal.take_profit:
                    deal.trailing_high = max(deal.trailing_high or point, point)
            elif point >= deal.take_profit:
                fill = limit_sell(deal.base_held, deal.take_profit, settings.fee_rate)
                deal.close("tp", fill, bar.open_ms, TAKE_PROFIT)
                return


# --- the whole backtest ---------------------------------------------------------------------
def entry_signal(
    alert: NormalizedAlert | None, frames: Mapping[str, pd.DataFrame], base_timeframe: str
) -> np.ndarray:
    """At which base bars the entry fires: the playbook through the same plan
    the workers run (per_bar_close), or every bar for asap."""
    base = frames[base_timeframe]
    if alert is None:
        return np.ones(len(base), dtype=bool)
    result = EvaluationPlan(step.canonical for step in alert.steps).run(frames, base_timeframe)
    raw = {cid: series.fired for cid, series in result.series.items()}
    return fire_bars("per_bar_close", alert_signal(alert, raw))


def _no_conditions(bot: BacktestBot) -> NormalizedAlert:
    # An asap bot still needs its base candles picked or resampled like an
    # alert's; a playbook with no steps asks for exactly those.
    return NormalizedAlert(
        symbol=bot.symbol,
        base_timeframe=bot.base_timeframe,
        mode="simple",
        logic="AND",
        gate_logic=None,
        evaluation_order="priority",
        steps=(),
        fire_mode="per_bar_close",
    )


def backtest_bot(document: Mapping, sets: list[CandleSet]) -> dict:
    """BOT.json over candle sets: the JSON document of BOTS.md "Bot backtest".
    Raises BotSettingsError, ConditionError or CandleFileError on bad input."""
    if not sets:
        raise CandleFileError("at least one candle file is needed")
    bot = read_bot(document, default_symbol=sets[0].symbol, default_timeframe=sets[0].timeframe)
    alert = entry_alert(bot.settings, symbol=bot.symbol, base_timeframe=bot.base_timeframe)
    frames = candles_by_timeframe(sets, alert or _no_conditions(bot))
    base = frames[bot.base_timeframe]
    if (base[["open", "high", "low", "close"]].to_numpy() <= 0).any():
        raise CandleFileError(
            f"{bot.symbol} {bot.base_timeframe} candles: a price is 0; orders cannot fill at 0"
        )
    simulation = Simulation(bot.settings).run(base, entry_signal(alert, frames, bot.base_timeframe))
    return backtest_document(bot, simulation)


def backtest_document(bot: BacktestBot, simulation: Simulation) -> dict:
    closed = [deal for deal in simulation.deals if deal.closed_ms is not None]
    pnl = [deal.pnl_quote for deal in closed]
    return {
        "bot": bot.to_json(),
        "deals": [deal.to_json() for deal in simulation.deals],
        "summary": {
            "deals": len(simulation.deals),
            "wins": sum(1 for value in pnl if value > 0),
            "pnl_quote": decimal_text(sum(pnl, Decimal(0))),
            "max_safety_orders_used": max(
                (deal.safety_filled for deal in simulation.deals), default=0
            ),
            "max_quote_committed": decimal_text(simulation.max_quote_committed),
        },
    }
