"""The vocabulary generated alerts are drawn from, in popularity order.

Indicators with their usual parameters, levels with the operators people
watch them with, and the other shapes of condition, each list ranked from
the most to the least used; `Ranked` draws from a list with Zipf-like
weights 1 / rank ** exponent.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import accumulate

# Exponents by what is drawn: most people leave parameters at their defaults
# (RSI(14) takes ~83% of RSI conditions), levels cluster on the classic pairs
# (30/70 take ~75%), and indicators and operators spread a little wider.
PARAMETER_EXPONENT = 3.0
LEVEL_EXPONENT = 2.5
ZIPF_EXPONENT = 2.0
# Popular symbols (BTC, ETH) draw far more alerts than the rest: the first of
# 200 symbols takes ~17% of the alerts, the last ~0.1%.
SYMBOL_EXPONENT = 1.0
CONDITIONS_PER_ALERT = 5


class Ranked:
    """Choices in popularity order, drawn with weight 1 / rank ** exponent."""

    def __init__(
        self, choices: Sequence, exponent: float = ZIPF_EXPONENT, *, in_pairs: bool = False
    ) -> None:
        """With `in_pairs`, choices 1-2 share rank 1, 3-4 rank 2, and so on:
        oversold 30 is as popular as overbought 70."""
        if not choices:
            raise ValueError("a ranked vocabulary needs at least one choice")
        self.choices = tuple(choices)
        ranks = [index // 2 + 1 if in_pairs else index + 1 for index in range(len(choices))]
        self.cumulative = list(accumulate(1.0 / rank**exponent for rank in ranks))

    def draw(self, rng: random.Random):
        return rng.choices(self.choices, cum_weights=self.cumulative)[0]


# --- the vocabulary ------------------------------------------------------------------

PARAMS: dict[str, Ranked] = {
    "RSI": Ranked(
        [{"length": n} for n in (14, 7, 21, 9, 6, 2, 10, 12, 5, 3, 24, 28)],
        PARAMETER_EXPONENT,
    ),
    "EMA": Ranked(
        [{"length": n} for n in (20, 50, 200, 9, 21, 12, 26, 100, 10, 5, 55, 34, 8, 13, 89, 144)],
        PARAMETER_EXPONENT,
    ),
    "SMA": Ranked(
        [{"length": n} for n in (50, 200, 20, 100, 10, 9, 5, 30, 21, 150, 7, 14)],
        PARAMETER_EXPONENT,
    ),
    "MACD": Ranked(
        [
            {"fast": fast, "slow": slow, "signal": signal}
            for fast, slow, signal in (
                (12, 26, 9),
                (5, 35, 5),
                (8, 21, 5),
                (6, 13, 5),
                (12, 26, 5),
                (3, 10, 16),
                (19, 39, 9),
                (8, 17, 9),
                (10, 20, 7),
                (24, 52, 9),
            )
        ],
        PARAMETER_EXPONENT,
    ),
    "BBANDS": Ranked(
        [
            {"length": length, "std": std}
            for length, std in (
                (20, 2.0),
                (20, 2.5),
                (20, 1.5),
                (10, 2.0),
                (50, 2.0),
                (20, 3.0),
                (14, 2.0),
                (21, 2.0),
                (20, 1.0),
                (30, 2.0),
                (50, 2.5),
                (10, 1.5),
            )
        ],
        PARAMETER_EXPONENT,
    ),
    "STOCH": Ranked(
        [
            {"k": k, "d": d, "smooth_k": smooth}
            for k, d, smooth in (
                (14, 3, 3),
                (5, 3, 3),
                (21, 5, 5),
                (14, 3, 1),
                (9, 3, 3),
                (8, 3, 3),
                (14, 5, 3),
            )
        ],
        PARAMETER_EXPONENT,
    ),
    "ATR": Ranked(
        [{"length": n} for n in (14, 7, 21, 10, 20, 5, 28)],
        PARAMETER_EXPONENT,
    ),
    "MFI": Ranked(
        [{"length": n} for n in (14, 7, 21, 10, 20, 5, 28)],
        PARAMETER_EXPONENT,
    ),
    "CCI": Ranked(
        [{"length": n} for n in (20, 14, 30, 50, 10, 40, 100)],
        PARAMETER_EXPONENT,
    ),
}
OSCILLATOR_LEVELS = Ranked(
    (30, 70, 20, 80, 25, 75, 35, 65, 40, 60, 15, 85, 10, 90, 45, 55, 5, 95),
    LEVEL_EXPONENT,
    in_pairs=True,
)
STOCH_LEVELS = Ranked(
    (20, 80, 10, 90, 30, 70, 25, 75, 15, 85, 5, 95), LEVEL_EXPONENT, in_pairs=True
)
# (levels, the middle of the scale): a level below the middle is watched from
# above (oversold: "<", crossing below), one above it from below.
THRESHOLDS: dict[tuple[str, str], tuple[Ranked, float]] = {
    ("RSI", "value"): (OSCILLATOR_LEVELS, 50),
    ("MFI", "value"): (OSCILLATOR_LEVELS, 50),
    ("STOCH", "k"): (STOCH_LEVELS, 50),
    ("STOCH", "d"): (STOCH_LEVELS, 50),
    ("CCI", "value"): (
        Ranked(
            (-100, 100, -200, 200, -150, 150, -50, 50, -250, 250, -300, 300),
            LEVEL_EXPONENT,
            in_pairs=True,
        ),
        0,
    ),
    # MACD is in price units: only its zero line is the same level on every symbol.
    ("MACD", "macd"): (Ranked((0,)), 0),
    ("MACD", "histogram"): (Ranked((0,)), 0),
    ("BBANDS", "percent_b"): (
        Ranked((0.0, 1.0, 0.2, 0.8, 0.1, 0.9, 0.05, 0.95, 0.3, 0.7), LEVEL_EXPONENT, in_pairs=True),
        0.5,
    ),
    ("BBANDS", "bandwidth"): (Ranked((5, 10, 2, 3, 4, 8, 1, 15, 6, 20), LEVEL_EXPONENT), 4),
}
THRESHOLD_OPERANDS = Ranked(
    [
        ("RSI", "value"), ("STOCH", "k"), ("MACD", "histogram"), ("CCI", "value"),
        ("MFI", "value"), ("BBANDS", "percent_b"), ("STOCH", "d"), ("MACD", "macd"),
        ("BBANDS", "bandwidth"),
    ]
)  # fmt: skip
BELOW_OPERATORS = Ranked(("<", "crosses_below", "crosses_above", "<="), LEVEL_EXPONENT)
ABOVE_OPERATORS = Ranked((">", "crosses_above", "crosses_below", ">="), LEVEL_EXPONENT)
CROSS_OPERATORS = Ranked(("crosses_above", "crosses_below", ">", "<", "crosses"), LEVEL_EXPONENT)
AVERAGES = Ranked(
    [("EMA", "value"), ("SMA", "value"), ("BBANDS", "lower"), ("BBANDS", "upper"), ("BBANDS", "middle")]
)  # fmt: skip
PRICE_FIELDS = Ranked(("close", "low", "high", "open"), PARAMETER_EXPONENT)
PRICE_OFFSETS_PCT = Ranked(
    (-5, 5, -10, 10, -2, 2, -3, 3, -1, 1, -20, 20, -15, 15, -7, 7, -4, 4),
    LEVEL_EXPONENT,
    in_pairs=True,
)
PAIRED_LINES = Ranked(
    [("MACD", "macd", "signal"), ("EMA", None, None), ("STOCH", "k", "d"), ("SMA", None, None)]
)
CHANNEL_OPERATORS = Ranked(
    ("inside_channel", "entering_channel", "exiting_channel", "outside_channel")
)
CHANNELS = Ranked([(30, 70), (20, 80), (40, 60), (25, 75), (10, 90), (45, 55)], LEVEL_EXPONENT)
CHANNEL_INDICATORS = Ranked(("RSI", "STOCH", "MFI"))
MOVEMENT_OPERANDS = Ranked(("close", "RSI", "volume", "ATR"))
MOVEMENT_BARS = Ranked((1, 3, 5, 2, 10, 4, 6, 12, 24), PARAMETER_EXPONENT)
MOVEMENT_PCT = Ranked((1, 2, 5, 3, 10, 0.5, 4, 20, 1.5), PARAMETER_EXPONENT)
MOVEMENT_AMOUNTS = Ranked((5, 10, 3, 15, 20, 2), PARAMETER_EXPONENT)
DIVERGENCE_OPERATORS = Ranked(
    ("bullish_divergence", "bearish_divergence", "divergence", "convergence")
)
DIVERGENCE_INDICATORS = Ranked([("RSI", "value"), ("MACD", "histogram"), ("MFI", "value"), ("CCI", "value")])  # fmt: skip
PIVOTS = Ranked((3, 2, 5, 4), PARAMETER_EXPONENT)
LOOKBACKS = Ranked((60, 30, 90, 120, 45), PARAMETER_EXPONENT)
SHAPES = (
    ("threshold", 50),
    ("price_vs_average", 22),
    ("paired_lines", 10),
    ("price_level", 5),
    ("channel", 5),
    ("movement", 4),
    ("divergence", 2),
    ("volume_spike", 2),
)
VALIDITY_BARS = Ranked((1, 3, 5, 2, 10, 4, 6, 8, 12, 20, 24, 48), PARAMETER_EXPONENT)
OTHER_TIMEFRAME_SHARE = 0.05
