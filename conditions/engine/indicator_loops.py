"""The compiled loops of the indicators (see conditions.engine.indicators).

Each value depends on the previous one, or on a window that numpy could only
materialize as a (bars x length) temporary; and one compiled call per
indicator costs a few microseconds where a dozen numpy operations on short
series cost tens. Every loop does the arithmetic of the reference, in the
reference's order, so the results agree to the last bit (the engine tests
compare them with TA-Lib and, where the module names pandas-ta as the
reference, with pandas-ta).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# TA-Lib treats a difference within this fraction of the magnitudes it was
# taken from as zero (its TA_IS_ZERO_SCALED): prices that are equal on paper
# can differ in their last bits once (high + low + close) / 3 is rounded.
RELATIVE_ZERO = 1e-14


@njit(cache=True)
def convolved_average(values: np.ndarray, length: int) -> np.ndarray:
    # pandas-ta's nb_sma: np.convolve(ones(length) / length, values), whose
    # numba implementation without SciPy sums each window's products in
    # order from 0, and swaps its operands for a series exactly one window
    # long (then it sums the weights times the values last to first).
    result = np.full(values.size, np.nan)
    if values.size < length:
        return result
    weight = 1.0 / length
    if values.size == length:
        total = 0.0
        for i in range(length):
            total += weight * values[length - 1 - i]
        result[length - 1] = total
        return result
    for end in range(length - 1, values.size):
        total = 0.0
        for i in range(end - length + 1, end + 1):
            total += values[i] * weight
        result[end] = total
    return result


@njit(cache=True)
def seeded_ema(values: np.ndarray, length: int) -> np.ndarray:
    # TA-Lib's EMA: seeded with the mean of the first `length` values, then
    # its own update formula, so results agree to the last bits.
    result = np.full(values.size, np.nan)
    if values.size < length:
        return result
    total = 0.0
    for i in range(length):
        total += values[i]
    previous = total / length
    result[length - 1] = previous
    factor = 2.0 / (length + 1)
    for i in range(length, values.size):
        previous = (values[i] - previous) * factor + previous
        result[i] = previous
    return result


@njit(cache=True)
def oscillator_share(part: float, other: float) -> float:
    # _share for one bar: 100 * part / total, 0 without movement.
    total = part + other
    if np.isnan(total):
        return np.nan
    if total > 0:
        return 100.0 * (part / total)
    return 0.0


@njit(cache=True)
def wilder_rsi(close: np.ndarray, length: int) -> np.ndarray:
    # RSI in one pass: each close's gain and loss (from bar 1), each
    # Wilder-smoothed from the simple average of the first `length` of them
    # with TA-Lib's update formula, then their share of the movement.
    result = np.full(close.size, np.nan)
    if close.size - 1 < length:
        return result
    gain_total = 0.0
    loss_total = 0.0
    for i in range(1, length + 1):
        change = close[i] - close[i - 1]
        gain_total += change if change > 0 else 0.0
        loss_total += -change if change < 0 else 0.0
    gain = gain_total / length
    loss = loss_total / length
    result[length] = oscillator_share(gain, loss)
    for i in range(length + 1, close.size):
        change = close[i] - close[i - 1]
        gain = (gain * (length - 1) + (change if change > 0 else 0.0)) / length
        loss = (loss * (length - 1) + (-change if change < 0 else 0.0)) / length
        result[i] = oscillator_share(gain, loss)
    return result


@njit(cache=True)
def true_range(high: float, low: float, previous_close: float) -> float:
    # np.maximum / np.minimum for one bar: a missing price gives no range.
    if np.isnan(high) or np.isnan(low) or np.isnan(previous_close):
        return np.nan
    top = high if high >= previous_close else previous_close
    bottom = low if low <= previous_close else previous_close
    return top - bottom


@njit(cache=True)
def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, length: int) -> np.ndarray:
    # ATR in one pass: the true ranges from bar 1, Wilder-smoothed from the
    # simple average of the first `length` of them.
    result = np.full(close.size, np.nan)
    if close.size - 1 < length:
        return result
    total = 0.0
    for i in range(1, length + 1):
        total += true_range(high[i], low[i], close[i - 1])
    average = total / length
    result[length] = average
    for i in range(length + 1, close.size):
        average = (average * (length - 1) + true_range(high[i], low[i], close[i - 1])) / length
        result[i] = average
    return result


@njit(cache=True)
def window_sums(values: np.ndarray, length: int) -> np.ndarray:
    # Each window summed afresh rather than as a running total, so a window
    # of zeros sums to exactly zero: the zero-flow rule of MFI relies on it.
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        total = 0.0
        for i in range(end - length + 1, end + 1):
            total += values[i]
        result[end] = total
    return result


@njit(cache=True)
def window_deviation_sums(
    values: np.ndarray, centers: np.ndarray, length: int, squared: bool
) -> np.ndarray:
    # Sum of |value - center| (or its square) over each window, around the
    # center of the window ending at the same bar.
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        center = centers[end]
        total = 0.0
        for i in range(end - length + 1, end + 1):
            deviation = values[i] - center
            total += deviation * deviation if squared else abs(deviation)
        result[end] = total
    return result


@njit(cache=True)
def window_extremes(values: np.ndarray, length: int, highest: bool) -> np.ndarray:
    result = np.full(values.size, np.nan)
    for end in range(length - 1, values.size):
        extreme = values[end]
        for i in range(end - length + 1, end):
            if (values[i] > extreme) if highest else (values[i] < extreme):
                extreme = values[i]
        result[end] = extreme
    return result


@njit(cache=True)
def simple_average(values: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        # pandas-ta's sma has no answer for length 1: the values themselves.
        return values.copy()
    return convolved_average(values, length)


@njit(cache=True)
def macd_lines(close: np.ndarray, fast: int, slow: int, signal: int):
    """(line, signal, histogram), fast <= slow.

    The three EMAs of `seeded_ema` in one pass: each update waits on
    its own previous value only, so the processor runs the three at once.
    The fast EMA is seeded at the bar where the slow one starts, with the
    average of the fast closes ending there, as TA-Lib seeds it; the signal
    on the first `signal` values of the line."""
    size = close.size
    line = np.full(size, np.nan)
    signal_line = np.full(size, np.nan)
    if size < slow:
        return line, signal_line, line - signal_line
    slow_total = 0.0
    for i in range(slow):
        slow_total += close[i]
    fast_total = 0.0
    for i in range(slow - fast, slow):
        fast_total += close[i]
    slow_ema = slow_total / slow
    fast_ema = fast_total / fast
    slow_factor = 2.0 / (slow + 1)
    fast_factor = 2.0 / (fast + 1)
    signal_factor = 2.0 / (signal + 1)
    signal_seed = slow - 2 + signal
    signal_total = 0.0
    signal_ema = np.nan
    for i in range(slow - 1, size):
        if i >= slow:
            slow_ema = (close[i] - slow_ema) * slow_factor + slow_ema
            fast_ema = (close[i] - fast_ema) * fast_factor + fast_ema
        value = fast_ema - slow_ema
        line[i] = value
        if i < signal_seed:
            signal_total += value
            continue
        if i == signal_seed:
            signal_ema = (signal_total + value) / signal
        else:
            signal_ema = (value - signal_ema) * signal_factor + signal_ema
        signal_line[i] = signal_ema
    return line, signal_line, line - signal_line


@njit(cache=True)
def ratio(numerator: float, denominator: float, defined: bool) -> float:
    return numerator / denominator if defined else np.nan


@njit(cache=True)
def bollinger_bands(close: np.ndarray, length: int, std: float):
    """(lower, middle, upper, bandwidth, percent_b)."""
    middle = simple_average(close, length)
    sums = window_deviation_sums(close, middle, length, True)
    size = close.size
    lower, upper = np.empty(size), np.empty(size)
    bandwidth, percent_b = np.empty(size), np.empty(size)
    for i in range(size):
        deviation = np.sqrt(sums[i] / length)
        # A flat window leaves rounding residue, not a deviation: TA-Lib says 0.
        if deviation <= RELATIVE_ZERO * np.abs(middle[i]):
            deviation = 0.0
        lower[i] = middle[i] - std * deviation
        upper[i] = middle[i] + std * deviation
        width = upper[i] - lower[i]
        bandwidth[i] = 100.0 * ratio(width, middle[i], middle[i] != 0)
        percent_b[i] = ratio(close[i] - lower[i], width, width > 0)
    return lower, middle, upper, bandwidth, percent_b


@njit(cache=True)
def stochastic(high: np.ndarray, low: np.ndarray, close: np.ndarray, k: int, d: int, smooth_k: int):
    """(%K, %D) of the slow stochastic."""
    lowest = window_extremes(low, k, False)
    highest = window_extremes(high, k, True)
    fast_k = np.empty(close.size)
    for i in range(close.size):
        price_range = highest[i] - lowest[i]
        # A window without range puts the close nowhere in it: TA-Lib says 0.
        has_range = price_range > 0
        fast_k[i] = (
            ratio(close[i] - lowest[i], price_range / 100.0, has_range) if has_range else 0.0
        )
    slow_k = np.full(close.size, np.nan)
    slow_k[k - 1 :] = simple_average(fast_k[k - 1 :].copy(), smooth_k)
    first_k = k + smooth_k - 2
    slow_d = np.full(close.size, np.nan)
    slow_d[first_k:] = simple_average(slow_k[first_k:].copy(), d)
    return slow_k, slow_d


@njit(cache=True)
def typical_price(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    return (high + low + close) / 3.0


@njit(cache=True)
def money_flow_index(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, length: int
) -> np.ndarray:
    typical = typical_price(high, low, close)
    positive = np.zeros(typical.size)
    negative = np.zeros(typical.size)
    for i in range(1, typical.size):
        change = typical[i] - typical[i - 1]
        moved = np.abs(change) > RELATIVE_ZERO * (np.abs(typical[i]) + np.abs(typical[i - 1]))
        flow = typical[i] * volume[i]
        positive[i] = flow if moved and change > 0 else 0.0
        negative[i] = flow if moved and change < 0 else 0.0
    positive_sums = window_sums(positive, length)
    negative_sums = window_sums(negative, length)
    result = np.empty(typical.size)
    for i in range(typical.size):
        result[i] = oscillator_share(positive_sums[i], negative_sums[i])
    return result


@njit(cache=True)
def commodity_channel_index(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, length: int
) -> np.ndarray:
    typical = typical_price(high, low, close)
    mean = window_sums(typical, length) / length
    mean_deviation = window_deviation_sums(typical, mean, length, False) / length
    result = np.empty(typical.size)
    for i in range(typical.size):
        if np.isnan(mean[i]):
            result[i] = np.nan
            continue
        deviation = typical[i] - mean[i]
        # On a flat window both are rounding residue; TA-Lib reports 0 there.
        level = RELATIVE_ZERO * np.abs(mean[i])
        meaningful = np.abs(deviation) > level and mean_deviation[i] > level
        result[i] = ratio(deviation, 0.015 * mean_deviation[i], meaningful) if meaningful else 0.0
    return result


# Indicator kinds, in the order of the catalog; the price rows of `prices`
# below are the catalog's SOURCES: open, high, low, close, volume.
RSI, SMA, EMA, MACD, BBANDS, STOCH, ATR, MFI, CCI, VOLUME = range(10)
RECURSIVE = (RSI, EMA, MACD, ATR)
_HIGH, _LOW, _CLOSE, _VOLUME = 1, 2, 3, 4


@njit(cache=True)
def indicator_outputs(kind: int, prices: np.ndarray, params: np.ndarray, std: float) -> np.ndarray:
    """Every output of one indicator over `prices` (sources x bars), one row
    per output in the catalog's order. `params` holds its whole-number
    parameters in the catalog's order (a source as its row of `prices`),
    `std` BBANDS' float one. Values before the warm-up are left as computed."""
    outputs = np.empty((5, prices.shape[1]))
    high, low, close, volume = prices[_HIGH], prices[_LOW], prices[_CLOSE], prices[_VOLUME]
    if kind == RSI:
        outputs[0] = wilder_rsi(close, params[0])
    elif kind == SMA:
        outputs[0] = simple_average(prices[params[1]], params[0])
    elif kind == EMA:
        outputs[0] = seeded_ema(prices[params[1]], params[0])
    elif kind == MACD:
        # TA-Lib swaps fast and slow too.
        fast, slow = min(params[0], params[1]), max(params[0], params[1])
        line, signal, histogram = macd_lines(close, fast, slow, params[2])
        outputs[0], outputs[1], outputs[2] = line, signal, histogram
    elif kind == BBANDS:
        lower, middle, upper, bandwidth, percent_b = bollinger_bands(close, params[0], std)
        outputs[0], outputs[1], outputs[2] = lower, middle, upper
        outputs[3], outputs[4] = bandwidth, percent_b
    elif kind == STOCH:
        slow_k, slow_d = stochastic(high, low, close, params[0], params[1], params[2])
        outputs[0], outputs[1] = slow_k, slow_d
    elif kind == ATR:
        outputs[0] = wilder_atr(high, low, close, params[0])
    elif kind == MFI:
        outputs[0] = money_flow_index(high, low, close, volume, params[0])
    elif kind == CCI:
        outputs[0] = commodity_channel_index(high, low, close, params[0])
    else:
        outputs[0] = volume
    return outputs


@njit(cache=True)
def tails_into(
    table: np.ndarray,
    prices: np.ndarray,
    kinds: np.ndarray,
    params: np.ndarray,
    stds: np.ndarray,
    warmups: np.ndarray,
    tails: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Many indicators over the same candles in one call: for indicator i,
    the last `tails[i]` values of its output o into the end of row
    `rows[i, o]` of `table` (-1: not wanted), NaN before them; each value
    what the full computation over `prices` has there, NaN in its warm-up.

    A recursive indicator is computed over every bar (its seed sits at the
    first); any other over the bars its tail reads and one more (pandas-ta's
    convolution sums a series exactly one window long in another order)."""
    bar_count = prices.shape[1]
    width = table.shape[1]
    for i in range(kinds.size):
        tail, warmup = tails[i], warmups[i]
        start = 0
        if kinds[i] not in RECURSIVE:
            start = max(0, bar_count - tail - warmup - 1)
        count = bar_count - start
        outputs = np.empty((0, 0))
        if count > warmup:
            outputs = indicator_outputs(kinds[i], prices[:, start:], params[i], stds[i])
        for output in range(rows.shape[1]):
            row = rows[i, output]
            if row < 0:
                continue
            table[row, : width - tail] = np.nan
            for bar in range(tail):
                index = count - tail + bar
                value = outputs[output, index] if index >= warmup else np.nan
                table[row, width - tail + bar] = value
