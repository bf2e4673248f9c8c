"""The paper exchange's fill arithmetic (BOTS.md "Paper exchange"): pure, no Django.

The live paper adapter and the bot backtest both fill through these
functions, so a backtest and a paper bot agree to the last digit.

Fees are taken from what is received: base on buys, quote on sells. A market
order fills at the price given (the latest price, or a bar's close in a
backtest) with the taker fee; a limit order at its limit price with the maker
fee. Both rates default to 0.1%; the caller passes the one that applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

BUY = "buy"
SELL = "sell"


@dataclass(frozen=True)
class Fill:
    side: str  # buy | sell
    price: Decimal
    quantity: Decimal  # base bought or sold, gross
    quote: Decimal  # quote paid or received, gross
    fee: Decimal
    fee_asset: str  # "base" on buys, "quote" on sells
    net_base: Decimal  # base that changes hands after the fee: received on buys, given on sells
    net_quote: Decimal  # quote that changes hands after the fee: paid on buys, received on sells


def _check(amount: Decimal, price: Decimal, fee_rate: Decimal, what: str) -> None:
    if not price > 0:
        raise ValueError(f"a fill needs a price above 0, got {price}")
    if not amount > 0:
        raise ValueError(f"a fill needs a {what} above 0, got {amount}")
    if not 0 <= fee_rate < 1:
        raise ValueError(f"a fee rate is a fraction in [0, 1), got {fee_rate}")


def _buy(quantity: Decimal, quote: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    fee = quantity * fee_rate
    return Fill(BUY, price, quantity, quote, fee, "base", quantity - fee, quote)


def _sell(quantity: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    quote = quantity * price
    fee = quote * fee_rate
    return Fill(SELL, price, quantity, quote, fee, "quote", quantity, quote - fee)


def market_buy(quote_amount: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    """Spend `quote_amount` at `price` (taker fee, paid in base)."""
    _check(quote_amount, price, fee_rate, "quote amount")
    return _buy(quote_amount / price, quote_amount, price, fee_rate)


def market_sell(quantity: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    """Sell `quantity` base at `price` (taker fee, paid in quote)."""
    _check(quantity, price, fee_rate, "quantity")
    return _sell(quantity, price, fee_rate)


def limit_buy(quantity: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    """A resting buy of `quantity` base filled at its limit `price` (maker fee).
    Limit orders are sized in base, as exchanges take them; a quote-sized
    order becomes quantity = quote / price when it is placed."""
    _check(quantity, price, fee_rate, "quantity")
    return _buy(quantity, quantity * price, price, fee_rate)


def limit_sell(quantity: Decimal, price: Decimal, fee_rate: Decimal) -> Fill:
    """A resting sell of `quantity` base filled at its limit `price` (maker fee)."""
    _check(quantity, price, fee_rate, "quantity")
    return _sell(quantity, price, fee_rate)


def intrabar_path(
    open_: Decimal, high: Decimal, low: Decimal, close: Decimal
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The order in which a bar is assumed to have traded: open, low, high,
    close when close >= open, else open, high, low, close. Price moves in a
    straight line between these points, so a resting order is reached at the
    first point at or beyond its price."""
    if close >= open_:
        return (open_, low, high, close)
    return (open_, high, low, close)


def limit_touched(side: str, limit_price: Decimal, high: Decimal, low: Decimal) -> bool:
    """Whether a bar reaches a resting order: a buy when its low does, a sell
    when its high does."""
    if side == BUY:
        return low <= limit_price
    if side == SELL:
        return high >= limit_price
    raise ValueError(f"side must be buy or sell, got {side!r}")
