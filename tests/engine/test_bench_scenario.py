"""The benchmark's generated users, alerts and candles (conditions/bench):
fixed by the seed, skewed the way real subscriptions are, and valid input
for the engine."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conditions.bench.market import CYCLE_CLOSE_MS, GeneratedMarket, symbol_names
from conditions.bench.scenario import (
    generated_scenario,
    normalized,
    scenario_stats,
)
from conditions.bench.vocabulary import Ranked
from conditions.engine.candles import validate_frame
from conditions.engine.timeframes import timeframe_ms

TIMEFRAMES = ("1h", "4h", "15m")


def draw(seed: int, users: int, symbols: int, timeframes=("1h",)):
    return generated_scenario(seed=seed, users=users, symbols=symbols, timeframes=timeframes)


def test_the_same_seed_gives_the_same_alerts_and_candles() -> None:
    first_market, first = draw(seed=5, users=300, symbols=4, timeframes=TIMEFRAMES)
    second_market, second = draw(seed=5, users=300, symbols=4, timeframes=TIMEFRAMES)

    assert [alert.raw for alert in first] == [alert.raw for alert in second]
    for symbol in first_market.symbols:
        for timeframe in TIMEFRAMES:
            assert first_market.candles(symbol, timeframe).equals(
                second_market.candles(symbol, timeframe)
            )


def test_another_seed_gives_other_alerts_and_candles() -> None:
    market, alerts = draw(seed=5, users=300, symbols=4)
    other_market, other = draw(seed=6, users=300, symbols=4)

    assert [alert.raw for alert in alerts] != [alert.raw for alert in other]
    symbol = market.symbols[0]
    assert not market.candles(symbol, "1h").equals(other_market.candles(symbol, "1h"))


def test_alerts_on_one_symbol_share_far_fewer_distinct_conditions_than_there_are_alerts() -> None:
    # Given 6,000 users with one alert of five conditions on one symbol
    _, alerts = draw(seed=1, users=6000, symbols=1)
    playbooks = normalized(alerts)

    stats = scenario_stats(alerts, playbooks)

    assert stats.condition_references == 5 * 6000
    assert stats.distinct_conditions < stats.alerts / 4
    assert stats.distinct_conditions < stats.condition_references / 20
    assert stats.distinct_indicator_specs < stats.distinct_conditions / 10


def test_popularity_falls_off_like_a_zipf_law() -> None:
    _, alerts = draw(seed=2, users=3000, symbols=2)
    counts = Counter(step.condition_id for p in normalized(alerts) for step in p.steps)
    by_rank = [count for _, count in counts.most_common()]

    # The head is heavy: the most used condition is used far more than the
    # tenth, which is used far more than the hundredth; and the tail is long.
    assert by_rank[0] > 3 * by_rank[9] > 3 * by_rank[99]
    assert sum(by_rank[:10]) > 0.25 * sum(by_rank)
    assert by_rank.count(1) > 0.25 * len(by_rank)


def test_a_ranked_choice_is_drawn_in_proportion_to_one_over_its_rank() -> None:
    import random

    ranked = Ranked(("a", "b", "c", "d"), exponent=1.0)
    rng = random.Random(0)
    counts = Counter(ranked.draw(rng) for _ in range(40_000))

    for rank, choice in enumerate("abcd", start=1):
        assert counts[choice] / counts["a"] == pytest.approx(1 / rank, rel=0.08)


def test_alerts_spread_over_every_symbol_and_timeframe_most_on_the_popular_ones() -> None:
    market, alerts = draw(seed=3, users=4000, symbols=10, timeframes=TIMEFRAMES)
    per_symbol = Counter(alert.symbol for alert in alerts)
    per_timeframe = Counter(alert.base_timeframe for alert in alerts)

    assert set(per_symbol) == set(market.symbols)
    assert per_symbol[market.symbols[0]] > 5 * per_symbol[market.symbols[-1]]
    assert set(per_timeframe) == set(TIMEFRAMES)
    assert per_timeframe["1h"] > per_timeframe["15m"]


def test_conditions_on_another_timeframe_than_their_alert_are_on_a_coarser_one() -> None:
    _, alerts = draw(seed=4, users=2000, symbols=3, timeframes=TIMEFRAMES)
    coarser = {"15m": {"1h", "4h"}, "1h": {"4h"}, "4h": set()}
    others = [
        (playbook.base_timeframe, step.canonical["timeframe"])
        for playbook in normalized(alerts)
        for step in playbook.steps
        if step.canonical["timeframe"] != playbook.base_timeframe
    ]

    assert others
    assert all(timeframe in coarser[base] for base, timeframe in others)


def test_generated_candles_are_valid_and_end_when_the_cycle_closes() -> None:
    market = GeneratedMarket(symbols=7, timeframes=TIMEFRAMES, seed=9)

    assert market.symbols == symbol_names(7)
    for symbol in market.symbols:
        for timeframe in TIMEFRAMES:
            candles = market.candles(symbol, timeframe)
            validate_frame(candles, f"{symbol}-{timeframe}")
            assert len(candles) == 1000
            open_time = candles["open_time"].to_numpy()
            step = timeframe_ms(timeframe)
            assert open_time[-1] + step == CYCLE_CLOSE_MS
            assert (np.diff(open_time) == step).all()


def test_the_cycle_before_is_the_same_series_one_bar_earlier() -> None:
    market = GeneratedMarket(symbols=2, timeframes=("15m",), seed=9)
    symbol = market.symbols[1]

    now = market.candles(symbol, "15m", 0)
    before = market.candles(symbol, "15m", -1)

    assert before["open_time"].iloc[-1] + timeframe_ms("15m") == now["open_time"].iloc[-1]
    np.testing.assert_array_equal(before.to_numpy()[1:], now.to_numpy()[:-1])


def test_symbols_built_from_one_kline_file_trade_at_different_prices() -> None:
    market = GeneratedMarket(symbols=12, timeframes=("1h",), seed=1)
    # S000 and S006 are both windows of the ADABTC file.
    first, seventh = market.symbols[0], market.symbols[6]

    assert first[4:] == seventh[4:]
    assert market.candles(first, "1h")["close"].median() != pytest.approx(
        market.candles(seventh, "1h")["close"].median(), rel=0.01
    )


def test_more_measured_cycles_reach_further_back_with_the_same_candles() -> None:
    # Given the default market and one with candles for three more cycles
    usual = GeneratedMarket(symbols=12, timeframes=TIMEFRAMES, seed=5)
    longer = GeneratedMarket(symbols=12, timeframes=TIMEFRAMES, seed=5, earliest_cycle=-5)

    # Then every cycle the default market has is the same in both (the
    # scale benchmark's figures stay comparable whatever it measures)
    for symbol in usual.symbols:
        for timeframe in TIMEFRAMES:
            for cycle in (-2, -1, 0):
                np.testing.assert_array_equal(
                    longer.candles(symbol, timeframe, cycle).to_numpy(),
                    usual.candles(symbol, timeframe, cycle).to_numpy(),
                )
            # and the longer one goes on, bar by bar, into the past
            earliest = longer.candles(symbol, timeframe, -5)
            validate_frame(earliest, f"{symbol}-{timeframe}")
            assert (
                earliest["open_time"].iloc[-1] + 5 * timeframe_ms(timeframe)
                == (usual.candles(symbol, timeframe)["open_time"].iloc[-1])
            )
    with pytest.raises(ValueError, match="between -2 and 0"):
        usual.candles(usual.symbols[0], "1h", -3)
