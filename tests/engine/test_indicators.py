"""The indicator module against TA-Lib, the reference of CONDITIONS.md section 3.

Tolerance: 1e-6 relative on every bar where the reference has a value. Warm-up
is TA-Lib's lookback (see WARMUPS below); no convergence window is needed,
because the EMA-type indicators (EMA, MACD, RSI, ATR) are seeded exactly as
TA-Lib seeds them and agree from their very first value.

Three outputs also get an absolute floor, far below anything a user sees:
where the true value is exactly 0 (a window with no positive money flow, a
close at the bottom of its range for smooth_k + d bars), TA-Lib's running
sums keep rounding residue (up to ~4e-9 on MFI's 0-100 scale, ~1e-12 on
STOCH's), which no relative tolerance can absorb; %B near 0 inherits a
~1e-13 difference in where the lower band sits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from conditions.engine.catalog import INDICATORS
from conditions.engine.indicators import compute_indicator, warmup_bars

REPO_ROOT = Path(__file__).resolve().parents[2]
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_FLOOR = {("MFI", "value"): 1e-7, ("STOCH", "k"): 1e-7, ("STOCH", "d"): 1e-7}
PERCENT_B_FLOOR = 1e-9

# (name, params): defaults, the non-default sets the brief names, lengths at
# the edge of TA-Lib's accepted range, and a MACD given slow before fast.
CASES: list[tuple[str, dict]] = [
    ("RSI", {"length": 14}),
    ("RSI", {"length": 2}),
    ("RSI", {"length": 50}),
    ("SMA", {"length": 20, "source": "close"}),
    ("SMA", {"length": 20, "source": "volume"}),
    ("SMA", {"length": 7, "source": "high"}),
    ("SMA", {"length": 1, "source": "open"}),
    ("SMA", {"length": 200, "source": "low"}),
    ("EMA", {"length": 20, "source": "close"}),
    ("EMA", {"length": 20, "source": "volume"}),
    ("EMA", {"length": 9, "source": "high"}),
    ("EMA", {"length": 1, "source": "close"}),
    ("EMA", {"length": 200, "source": "close"}),
    ("MACD", {"fast": 12, "slow": 26, "signal": 9}),
    ("MACD", {"fast": 5, "slow": 35, "signal": 5}),
    ("MACD", {"fast": 2, "slow": 3, "signal": 1}),
    ("MACD", {"fast": 26, "slow": 12, "signal": 9}),
    ("BBANDS", {"length": 20, "std": 2.0}),
    ("BBANDS", {"length": 20, "std": 1.5}),
    ("BBANDS", {"length": 2, "std": 3.0}),
    ("BBANDS", {"length": 100, "std": 2.5}),
    ("STOCH", {"k": 14, "d": 3, "smooth_k": 3}),
    ("STOCH", {"k": 5, "d": 3, "smooth_k": 3}),
    ("STOCH", {"k": 1, "d": 1, "smooth_k": 1}),
    ("STOCH", {"k": 21, "d": 5, "smooth_k": 1}),
    ("ATR", {"length": 14}),
    ("ATR", {"length": 1}),
    ("ATR", {"length": 50}),
    ("MFI", {"length": 14}),
    ("MFI", {"length": 2}),
    ("MFI", {"length": 50}),
    ("CCI", {"length": 20}),
    ("CCI", {"length": 2}),
    ("CCI", {"length": 100}),
]

# Index of the first value, per indicator, as TA-Lib's lookback.
WARMUPS = {
    "RSI": lambda p: p["length"],
    "SMA": lambda p: p["length"] - 1,
    "EMA": lambda p: p["length"] - 1,
    "MACD": lambda p: max(p["fast"], p["slow"]) + p["signal"] - 2,
    "BBANDS": lambda p: p["length"] - 1,
    "STOCH": lambda p: p["k"] + p["smooth_k"] + p["d"] - 3,
    "ATR": lambda p: p["length"],
    "MFI": lambda p: p["length"],
    "CCI": lambda p: p["length"] - 1,
    "VOLUME": lambda p: 0,
}


def reference(candles: pd.DataFrame, name: str, params: dict) -> dict[str, np.ndarray]:
    """TA-Lib's outputs, named as the catalog names them."""
    high, low, close, volume = (
        candles[column].to_numpy(dtype=np.float64) for column in ("high", "low", "close", "volume")
    )
    if name == "RSI":
        return {"value": talib.RSI(close, params["length"])}
    if name in ("SMA", "EMA"):
        source = candles[params["source"]].to_numpy(dtype=np.float64)
        average = talib.SMA if name == "SMA" else talib.EMA
        return {"value": average(source, params["length"])}
    if name == "MACD":
        line, signal, histogram = talib.MACD(
            close, params["fast"], params["slow"], params["signal"]
        )
        return {"macd": line, "signal": signal, "histogram": histogram}
    if name == "BBANDS":
        std = params["std"]
        upper, middle, lower = talib.BBANDS(close, params["length"], std, std, 0)
        width = upper - lower
        with np.errstate(divide="ignore", invalid="ignore"):
            percent_b = np.where(width > 0, (close - lower) / width, np.nan)
        return {
            "lower": lower,
            "middle": middle,
            "upper": upper,
            "bandwidth": width / middle * 100,
            "percent_b": percent_b,
        }
    if name == "STOCH":
        k, d = talib.STOCH(high, low, close, params["k"], params["smooth_k"], 0, params["d"], 0)
        return {"k": k, "d": d}
    if name == "ATR":
        return {"value": talib.ATR(high, low, close, params["length"])}
    if name == "MFI":
        return {"value": talib.MFI(high, low, close, volume, params["length"])}
    if name == "CCI":
        return {"value": talib.CCI(high, low, close, params["length"])}
    raise AssertionError(f"no reference for {name}")


def assert_matches_reference(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], name: str, where: str
) -> None:
    assert set(got) == set(INDICATORS[name].outputs), where
    for output, wanted in expected.items():
        values = got[output]
        assert values.dtype == np.float64 and values.shape == wanted.shape, (where, output)
        missing = np.isnan(wanted)
        assert np.array_equal(np.isnan(values), missing), (
            f"{where} {output}: missing at {np.flatnonzero(np.isnan(values) != missing)[:5]}"
        )
        floor = PERCENT_B_FLOOR if output == "percent_b" else ABSOLUTE_FLOOR.get((name, output), 0)
        error = np.abs(values[~missing] - wanted[~missing])
        allowed = RELATIVE_TOLERANCE * np.abs(wanted[~missing]) + floor
        if error.size and not np.all(error <= allowed):
            worst = int(np.argmax(error - allowed))
            bar = int(np.flatnonzero(~missing)[worst])
            raise AssertionError(
                f"{where} {output} at bar {bar}: {values[bar]!r} != TA-Lib {wanted[bar]!r}"
            )


def candles_from(
    high: list[float],
    low: list[float] | None = None,
    close: list[float] | None = None,
    volume: list[float] | None = None,
) -> pd.DataFrame:
    """A hand-made candle frame; low and close default to high (a flat bar)."""
    low = high if low is None else low
    close = high if close is None else close
    volume = [1.0] * len(high) if volume is None else volume
    return pd.DataFrame(
        {
            "open_time": np.arange(len(high), dtype=np.int64) * 60_000,
            "open": np.asarray(close, dtype=np.float64),
            "high": np.asarray(high, dtype=np.float64),
            "low": np.asarray(low, dtype=np.float64),
            "close": np.asarray(close, dtype=np.float64),
            "volume": np.asarray(volume, dtype=np.float64),
        }
    )


def case_id(case: tuple[str, dict]) -> str:
    name, params = case
    return name + "-" + "-".join(str(value) for value in params.values())


# --- agreement with TA-Lib on real candles -----------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_it_matches_talib_on_every_real_klines_file(klines, case) -> None:
    name, params = case
    for stem, candles in klines.items():
        got = compute_indicator(candles, name, params)
        assert_matches_reference(got, reference(candles, name, params), name, f"{stem} {params}")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_it_has_no_value_before_the_reference_has_one(klines, case) -> None:
    name, params = case
    candles = klines["ETHBTC-5m"]
    warmup = WARMUPS[name](params)
    assert warmup_bars(name, params) == warmup
    got = compute_indicator(candles, name, params)
    for output, values in got.items():
        assert np.isnan(values[:warmup]).all(), output
        after_warmup = values[warmup:]
        if output == "percent_b":
            # also missing after warm-up wherever the bands have no width
            after_warmup = after_warmup[(got["upper"] > got["lower"])[warmup:]]
        assert not np.isnan(after_warmup).any(), output
    for output, values in reference(candles, name, params).items():
        if output != "percent_b":  # ours, not TA-Lib's
            assert np.flatnonzero(~np.isnan(values))[0] == warmup, output


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_it_gives_empty_arrays_for_no_candles(klines, name) -> None:
    empty = klines["ETHBTC-5m"].iloc[:0]
    outputs = compute_indicator(empty, name, {})
    assert set(outputs) == set(INDICATORS[name].outputs)
    for values in outputs.values():
        assert values.dtype == np.float64 and values.shape == (0,)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_it_gives_only_missing_values_until_there_are_enough_candles(klines, case) -> None:
    name, params = case
    warmup = WARMUPS[name](params)
    for bars in sorted({1, warmup // 2, warmup} & set(range(1, warmup + 1))):
        candles = klines["LTCBTC-5m"].iloc[:bars]
        outputs = compute_indicator(candles, name, params)
        assert set(outputs) == set(INDICATORS[name].outputs)
        for output, values in outputs.items():
            assert values.shape == (bars,) and np.isnan(values).all(), (bars, output)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_it_gives_the_reference_value_on_the_first_bar_that_has_enough_history(
    klines, case
) -> None:
    # One bar past the warm-up is shorter than some pandas-ta functions accept
    # (STOCH wants k + d + smooth_k bars, RSI length + 1); TA-Lib has a value.
    name, params = case
    candles = klines["XLMBTC-5m"].iloc[: WARMUPS[name](params) + 1]
    got = compute_indicator(candles, name, params)
    assert not any(np.isnan(values[-1]) for values in got.values())
    assert_matches_reference(got, reference(candles, name, params), name, str(params))


def test_it_gives_raw_volume_for_volume(klines) -> None:
    candles = klines["ADABTC-5m"]
    volume = compute_indicator(candles, "VOLUME", {})["value"]
    assert np.array_equal(volume, candles["volume"].to_numpy())


def test_it_gives_the_same_bits_when_talib_cannot_be_imported(klines, tmp_path) -> None:
    # pandas-ta switches to TA-Lib silently when it is importable; the engine
    # must not care. This module imports TA-Lib, so in here it is importable.
    cases = [*CASES, ("VOLUME", {})]
    script = textwrap.dedent(
        """
        import json, sys
        sys.modules["talib"] = None
        import numpy as np, pandas as pd
        from pandas_ta.maps import Imports
        from conditions.engine.indicators import compute_indicator
        try:
            import talib
        except ImportError:
            pass
        else:
            raise SystemExit("talib is still importable")
        assert not Imports["talib"]
        files, cases, target = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
        arrays = {}
        for path in files:
            candles = pd.read_csv(path)
            for index, (name, params) in enumerate(cases):
                for output, values in compute_indicator(candles, name, params).items():
                    arrays[f"{path}|{index}|{output}"] = values
        np.savez(target, **arrays)
        print(json.dumps({"django_imported": "django" in sys.modules}))
        """
    )
    files = sorted(str(path) for path in (REPO_ROOT / "tests" / "data" / "klines").glob("*.csv"))
    target = tmp_path / "without_talib.npz"
    finished = subprocess.run(
        [sys.executable, "-c", script, json.dumps(files), json.dumps(cases), str(target)],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.splitlines()[-1]) == {"django_imported": False}
    without_talib = np.load(target)
    compared = 0
    for path in files:
        candles = klines[Path(path).stem]
        for index, (name, params) in enumerate(cases):
            for output, values in compute_indicator(candles, name, params).items():
                other = without_talib[f"{path}|{index}|{output}"]
                same_bits = np.array_equal(values.view(np.int64), other.view(np.int64))
                assert same_bits, (path, name, params, output)
                compared += 1
    assert compared == len(files) * sum(len(INDICATORS[name].outputs) for name, _ in cases)


# --- the corrections, on series small enough to check by hand ----------------


def test_it_counts_an_unchanged_typical_price_as_neither_positive_nor_negative_flow() -> None:
    # given typical prices 10, 11, 11, 12, 12, 11 whose unchanged bars carry most volume
    candles = candles_from([10, 11, 11, 12, 12, 11], volume=[1, 1, 100, 1, 50, 2])
    # when
    mfi = compute_indicator(candles, "MFI", {"length": 2})["value"]
    # then the unchanged bars count for nothing (pandas-ta counts them as
    # negative and would give 1.08 at bar 3)
    assert np.isnan(mfi[:2]).all()
    assert mfi[2:].tolist() == [100.0, 100.0, 100.0, 0.0]
    assert_matches_reference(
        {"value": mfi}, reference(candles, "MFI", {"length": 2}), "MFI", "hand-made"
    )


def test_it_counts_a_typical_price_equal_on_paper_as_unchanged() -> None:
    # given two bars whose typical prices are both 0.03 on paper, but
    # (0.05 + 0.02 + 0.02) / 3 rounds to 0.030000000000000002
    candles = candles_from(
        high=[0.04, 0.03, 0.05],
        low=[0.04, 0.03, 0.02],
        close=[0.04, 0.03, 0.02],
        volume=[1, 1, 1000],
    )
    # when
    mfi = compute_indicator(candles, "MFI", {"length": 2})["value"]
    # then the last bar is no rise: the only flow in the window is the fall
    assert mfi[2] == 0.0
    assert_matches_reference(
        {"value": mfi}, reference(candles, "MFI", {"length": 2}), "MFI", "hand-made"
    )


def test_it_keeps_the_parentheses_in_the_cci_formula() -> None:
    # given typical prices 1..5: mean 3, mean absolute deviation 1.2
    candles = candles_from([1, 2, 3, 4, 5])
    # when
    cci = compute_indicator(candles, "CCI", {"length": 5})["value"]
    # then CCI = (5 - 3) / (0.015 * 1.2), not 5 - 3 / (0.015 * 1.2) = -161.7
    assert cci[4] == pytest.approx(2 / (0.015 * 1.2), rel=1e-12)
    assert cci[4] == pytest.approx(111.111111, rel=1e-6)
    assert np.isnan(cci[:4]).all()
    assert_matches_reference(
        {"value": cci}, reference(candles, "CCI", {"length": 5}), "CCI", "hand-made"
    )


def test_it_uses_the_mean_absolute_deviation_in_cci() -> None:
    # given typical prices 1, 1, 4: mean 2, mean absolute deviation 4/3
    # (a standard deviation would be 1.414)
    cci = compute_indicator(candles_from([1, 1, 4]), "CCI", {"length": 3})["value"]
    assert cci[2] == pytest.approx((4 - 2) / (0.015 * 4 / 3), rel=1e-12)


def test_it_uses_the_population_standard_deviation_in_bollinger_bands() -> None:
    # given closes 1, 2, 3, 4: mean 2.5, population deviation sqrt(1.25)
    # (the sample deviation would be sqrt(5/3))
    candles = candles_from([1, 2, 3, 4])
    # when
    bands = compute_indicator(candles, "BBANDS", {"length": 4, "std": 2.0})
    # then
    deviation = np.sqrt(1.25)
    assert bands["middle"][3] == pytest.approx(2.5, rel=1e-12)
    assert bands["upper"][3] == pytest.approx(2.5 + 2 * deviation, rel=1e-12)
    assert bands["lower"][3] == pytest.approx(2.5 - 2 * deviation, rel=1e-12)
    assert bands["bandwidth"][3] == pytest.approx(4 * deviation / 2.5 * 100, rel=1e-12)
    assert bands["percent_b"][3] == pytest.approx(
        (4 - (2.5 - 2 * deviation)) / (4 * deviation), rel=1e-12
    )


def test_it_seeds_rsi_with_a_simple_average_and_has_no_value_before_bar_length() -> None:
    # given closes 1, 2, 1, 2, 3: changes +1, -1, +1, +1
    rsi = compute_indicator(candles_from([1, 2, 1, 2, 3]), "RSI", {"length": 2})["value"]
    # then bar 2 averages the first two changes (gain 0.5, loss 0.5), and
    # Wilder's smoothing goes on from there: gain 0.75 / loss 0.25, then 0.875 / 0.125
    assert np.isnan(rsi[:2]).all()
    assert rsi[2:].tolist() == pytest.approx([50.0, 75.0, 87.5], rel=1e-12)


def test_it_gives_flat_windows_the_reference_values(klines) -> None:
    # given real candles with 30 identical bars in the middle
    real = klines["ETCBTC-5m"].iloc[:120].reset_index(drop=True)
    flat = real.copy()
    flat.loc[40:69, ["open", "high", "low", "close"]] = real.loc[39, "close"]
    for name, params in [
        ("BBANDS", {"length": 20, "std": 2.0}),
        ("STOCH", {"k": 14, "d": 3, "smooth_k": 3}),
        ("CCI", {"length": 20}),
        ("MFI", {"length": 14}),
        ("RSI", {"length": 14}),
        ("ATR", {"length": 14}),
    ]:
        got = compute_indicator(flat, name, params)
        assert_matches_reference(got, reference(flat, name, params), name, f"flat {params}")
    bands = compute_indicator(flat, "BBANDS", {"length": 20, "std": 2.0})
    # then the bands collapse on the flat windows (bars 59..69): no width,
    # and %B, a position inside a band of zero width, is missing
    assert (bands["bandwidth"][59:70] == 0).all()
    assert np.isnan(bands["percent_b"][59:70]).all()
    assert not np.isnan(bands["percent_b"][70:]).any()
    assert (compute_indicator(flat, "CCI", {"length": 20})["value"][59:70] == 0).all()
    assert (compute_indicator(flat, "MFI", {"length": 14})["value"][54:70] == 0).all()


# --- lengths TA-Lib refuses, following the same formulas ---------------------


def test_it_gives_rsi_of_length_one_as_rise_or_not() -> None:
    rsi = compute_indicator(candles_from([1, 2, 2, 1, 3]), "RSI", {"length": 1})["value"]
    assert np.isnan(rsi[0])
    assert rsi[1:].tolist() == [100.0, 0.0, 0.0, 100.0]


def test_it_gives_mfi_of_length_one_as_rise_or_not() -> None:
    mfi = compute_indicator(candles_from([1, 2, 2, 1, 3]), "MFI", {"length": 1})["value"]
    assert np.isnan(mfi[0])
    assert mfi[1:].tolist() == [100.0, 0.0, 0.0, 100.0]


def test_it_collapses_bollinger_bands_of_length_one_onto_the_close(klines) -> None:
    candles = klines["ETHBTC-5m"].iloc[:50]
    bands = compute_indicator(candles, "BBANDS", {"length": 1, "std": 2.0})
    close = candles["close"].to_numpy()
    for output in ("lower", "middle", "upper"):
        assert np.array_equal(bands[output], close), output
    assert (bands["bandwidth"] == 0).all()
    assert np.isnan(bands["percent_b"]).all()


def test_it_gives_cci_of_length_one_as_zero(klines) -> None:
    cci = compute_indicator(klines["ETHBTC-5m"].iloc[:50], "CCI", {"length": 1})["value"]
    assert (cci == 0).all()


def test_it_gives_macd_with_a_fast_length_of_one_as_close_minus_the_slow_ema(klines) -> None:
    candles = klines["NXTBTC-5m"]
    close = candles["close"].to_numpy()
    got = compute_indicator(candles, "MACD", {"fast": 1, "slow": 26, "signal": 9})
    line = close - talib.EMA(close, 26)
    signal = np.full(close.size, np.nan)
    signal[25:] = talib.EMA(line[25:], 9)
    line[:33] = np.nan
    expected = {"macd": line, "signal": signal, "histogram": line - signal}
    assert_matches_reference(got, expected, "MACD", "fast 1")


# --- parameters and inputs ---------------------------------------------------


def test_it_fills_missing_parameters_with_the_catalog_defaults(klines) -> None:
    candles = klines["LTCBTC-5m"]
    defaults = compute_indicator(candles, "MACD", {})
    explicit = compute_indicator(candles, "MACD", {"fast": 12, "slow": np.int64(26), "signal": 9.0})
    for output in defaults:
        assert np.array_equal(defaults[output], explicit[output], equal_nan=True)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("WILLR", {}, "unknown indicator"),
        ("rsi", {}, "unknown indicator"),
        ("RSI", {"period": 14}, "no parameter period"),
        ("RSI", {"length": 0}, "at least 1"),
        ("RSI", {"length": 14.5}, "whole number"),
        ("RSI", {"length": "14"}, "must be a number"),
        ("RSI", {"length": float("nan")}, "must be a number"),
        ("BBANDS", {"std": "2"}, "must be a number"),
        ("BBANDS", {"std": 0}, "positive"),
        ("SMA", {"source": "hl2"}, "must be one of"),
    ],
)
def test_it_rejects_what_the_catalog_does_not_define(klines, name, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_indicator(klines["ETHBTC-5m"], name, params)


def test_it_leaves_the_candles_alone(klines) -> None:
    candles = klines["UNITTESTBTC-1m"].iloc[:300]
    before = candles.copy()
    results = [compute_indicator(candles, name, params) for name, params in CASES]
    results.append(compute_indicator(candles, "VOLUME", {}))
    for outputs in results:
        for values in outputs.values():
            values[:] = -1.0  # a caller may reuse the arrays it was given
    pd.testing.assert_frame_equal(candles, before)
