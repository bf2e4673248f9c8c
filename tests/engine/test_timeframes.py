from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conditions.engine.errors import ConditionError
from conditions.engine.timeframes import (
    TIMEFRAMES,
    align_to_base,
    bar_open_floor,
    next_bar_open,
    normalize_timeframe,
    resample,
    timeframe_ms,
)

KLINES = Path(__file__).resolve().parent.parent / "data" / "klines"
CANDLE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume"]


def load(name: str) -> pd.DataFrame:
    return pd.read_csv(KLINES / name)


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def as_datetime(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


# --- names -------------------------------------------------------------------


def test_it_lists_the_fifteen_binance_intervals_in_order() -> None:
    assert TIMEFRAMES == (
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
        "1d", "3d", "1w", "1M",
    )  # fmt: skip


@pytest.mark.parametrize("name", TIMEFRAMES)
def test_it_keeps_every_binance_interval_as_it_is(name: str) -> None:
    assert normalize_timeframe(name) == name


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("60m", "1h"),
        ("120m", "2h"),
        ("240m", "4h"),
        ("360m", "6h"),
        ("720m", "12h"),
        ("1H", "1h"),
        ("4H", "4h"),
        ("1D", "1d"),
        ("3D", "3d"),
        ("1W", "1w"),
        ("24h", "1d"),
        ("72h", "3d"),
        ("7d", "1w"),
        ("1440m", "1d"),
        ("15min", "15m"),
        ("1 hour", "1h"),
        (" 5m ", "5m"),
    ],
)
def test_it_resolves_timeframe_aliases(alias: str, expected: str) -> None:
    assert normalize_timeframe(alias) == expected


def test_it_tells_a_month_from_a_minute() -> None:
    assert normalize_timeframe("1M") == "1M"
    assert normalize_timeframe("1m") == "1m"
    assert timeframe_ms("1m") == 60_000
    with pytest.raises(ValueError, match="calendar"):
        timeframe_ms("1M")


@pytest.mark.parametrize(
    "value", ["180m", "2M", "30d", "1y", "0m", "", "hourly", "1 h x", 60, None]
)
def test_it_rejects_unknown_timeframes_naming_the_field(value: object) -> None:
    with pytest.raises(ConditionError) as caught:
        normalize_timeframe(value, field="conditions.0.timeframe")
    assert caught.value.field == "conditions.0.timeframe"
    assert "timeframe" in caught.value.reason or "string" in caught.value.reason


@pytest.mark.parametrize(
    ("name", "minutes"),
    [("1m", 1), ("5m", 5), ("1h", 60), ("4h", 240), ("1d", 1440), ("3d", 4320), ("1w", 10080)],
)
def test_it_gives_the_fixed_length_of_a_bar(name: str, minutes: int) -> None:
    assert timeframe_ms(name) == minutes * 60_000


# --- boundaries --------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 1, 10, 13, 7, tzinfo=UTC),  # a Wednesday
        datetime(2024, 1, 8, 0, 0, tzinfo=UTC),  # Monday midnight itself
        datetime(2024, 1, 14, 23, 59, 59, 999000, tzinfo=UTC),  # last instant of a Sunday
        datetime(2018, 1, 1, 0, 0, tzinfo=UTC),  # a Monday that starts a year
        datetime(1970, 1, 2, 5, 0, tzinfo=UTC),  # before the first Monday after the epoch
    ],
)
def test_it_starts_weeks_on_monday_midnight_utc(moment: datetime) -> None:
    stamp = int(moment.timestamp() * 1000)
    week_open = as_datetime(bar_open_floor(stamp, "1w"))
    assert week_open.weekday() == 0
    assert (week_open.hour, week_open.minute, week_open.second) == (0, 0, 0)
    assert week_open <= moment < week_open + timedelta(days=7)
    assert as_datetime(next_bar_open(stamp, "1w")) == week_open + timedelta(days=7)


@pytest.mark.parametrize(
    ("moment", "month_open", "next_month_open"),
    [
        ((2024, 2, 29, 12), (2024, 2, 1), (2024, 3, 1)),
        ((2023, 2, 28, 23), (2023, 2, 1), (2023, 3, 1)),
        ((2023, 12, 31, 23), (2023, 12, 1), (2024, 1, 1)),
        ((2024, 1, 1, 0), (2024, 1, 1), (2024, 2, 1)),
        ((2017, 11, 5, 4), (2017, 11, 1), (2017, 12, 1)),
    ],
)
def test_it_follows_calendar_months(
    moment: tuple[int, ...], month_open: tuple[int, ...], next_month_open: tuple[int, ...]
) -> None:
    assert bar_open_floor(ms(*moment), "1M") == ms(*month_open)
    assert next_bar_open(ms(*moment), "1M") == ms(*next_month_open)


def test_it_aligns_three_day_bars_to_the_epoch_like_binance() -> None:
    # 1970-01-04 is three days after the epoch, so a 3d bar opens there.
    assert bar_open_floor(ms(1970, 1, 6, 12), "3d") == ms(1970, 1, 4)
    stamp = ms(2018, 1, 20, 17)
    opened = bar_open_floor(stamp, "3d")
    assert opened % (3 * 86_400_000) == 0
    assert opened <= stamp < next_bar_open(stamp, "3d") == opened + 3 * 86_400_000


def test_it_treats_ints_and_int64_arrays_alike() -> None:
    stamps = np.array([ms(2024, 2, 29, 12, 34), ms(2023, 12, 31, 23), ms(2018, 1, 10, 4, 57)])
    for name in ("5m", "1h", "1d", "1w", "1M"):
        floors = bar_open_floor(stamps, name)
        following = next_bar_open(stamps, name)
        assert isinstance(floors, np.ndarray)
        assert floors.dtype == np.int64
        assert list(floors) == [bar_open_floor(int(s), name) for s in stamps]
        assert list(following) == [next_bar_open(int(s), name) for s in stamps]
        assert isinstance(bar_open_floor(int(stamps[0]), name), int)
        assert isinstance(bar_open_floor(np.int64(stamps[0]), name), int)


@settings(max_examples=200, deadline=None)
@given(
    stamp=st.integers(min_value=0, max_value=ms(2100, 1, 1)),
    name=st.sampled_from(TIMEFRAMES),
)
def test_it_puts_every_moment_in_exactly_one_bar(stamp: int, name: str) -> None:
    opened = bar_open_floor(stamp, name)
    closes = next_bar_open(stamp, name)
    assert opened <= stamp < closes
    assert bar_open_floor(opened, name) == opened
    assert bar_open_floor(closes, name) == closes
    assert next_bar_open(opened, name) == closes
    assert bar_open_floor(closes - 1, name) == opened


# --- resample ----------------------------------------------------------------


def resample_by_loop(candles: pd.DataFrame, bucket_of) -> pd.DataFrame:
    """A slow, obvious reference: group rows by a Python bucket function."""
    rows = []
    buckets = candles["open_time"].map(lambda t: bucket_of(as_datetime(int(t))))
    for bucket, group in candles.groupby(buckets, sort=True):
        rows.append(
            {
                "open_time": int(bucket.timestamp() * 1000),
                "open": group["open"].iloc[0],
                "high": group["high"].max(),
                "low": group["low"].min(),
                "close": group["close"].iloc[-1],
                "volume": group["volume"].sum(),
            }
        )
    return pd.DataFrame(rows, columns=CANDLE_COLUMNS)


def hour_bucket(hours: int):
    return lambda moment: moment.replace(hour=moment.hour - moment.hour % hours, minute=0)


def day_bucket(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0)


def week_bucket(moment: datetime) -> datetime:
    return day_bucket(moment) - timedelta(days=moment.weekday())


def month_bucket(moment: datetime) -> datetime:
    return day_bucket(moment).replace(day=1)


def minute_bucket(minutes: int):
    return lambda moment: moment.replace(minute=moment.minute - moment.minute % minutes)


@pytest.mark.parametrize(
    ("file", "target", "bucket_of"),
    [
        ("ETHBTC-5m.csv", "15m", minute_bucket(15)),
        ("ETHBTC-5m.csv", "1h", hour_bucket(1)),
        ("ETHBTC-5m.csv", "4h", hour_bucket(4)),
        ("ETHBTC-5m.csv", "1d", day_bucket),
        ("ETHBTC-5m.csv", "1w", week_bucket),
        ("ADABTC-5m.csv", "1h", hour_bucket(1)),
        ("UNITTESTBTC-1m.csv", "1h", hour_bucket(1)),
        ("UNITTESTBTC-1m.csv", "1d", day_bucket),
        ("UNITTESTBTC-1m.csv", "1M", month_bucket),
    ],
)
def test_it_resamples_real_klines_like_a_plain_groupby(file: str, target: str, bucket_of) -> None:
    candles = load(file)
    expected = resample_by_loop(candles, bucket_of)
    resampled = resample(candles, target)
    assert list(resampled.columns) == CANDLE_COLUMNS
    assert resampled["open_time"].dtype == np.int64
    pd.testing.assert_frame_equal(resampled, expected, check_exact=False, rtol=1e-12)


def test_it_never_invents_candles_for_exchange_gaps() -> None:
    candles = load("ADABTC-5m.csv")
    gap_at = int(np.argmax(np.diff(candles["open_time"].to_numpy())))
    last_before = int(candles["open_time"].iloc[gap_at])
    first_after = int(candles["open_time"].iloc[gap_at + 1])
    assert first_after - last_before > 2 * 3_600_000  # the file really has a gap of hours

    resampled = resample(candles, "1h")
    hours = resampled["open_time"].to_numpy()
    silent_hours = np.arange(
        bar_open_floor(last_before, "1h") + 3_600_000, bar_open_floor(first_after, "1h"), 3_600_000
    )
    assert len(silent_hours) >= 1
    assert not np.isin(silent_hours, hours).any()
    # every row has at least one base candle inside its hour
    base_hours = bar_open_floor(candles["open_time"].to_numpy(), "1h")
    assert set(hours) == set(base_hours)


def test_it_builds_a_partial_bucket_from_what_it_has() -> None:
    candles = load("ETHBTC-5m.csv").iloc[:20]  # 04:55 .. 06:30, ends mid-hour
    resampled = resample(candles, "1h")
    assert [as_datetime(t).hour for t in resampled["open_time"]] == [4, 5, 6]
    assert resampled["open"].iloc[0] == candles["open"].iloc[0]
    assert resampled["close"].iloc[-1] == candles["close"].iloc[-1]
    assert resampled["volume"].iloc[-1] == pytest.approx(candles["volume"].iloc[13:].sum())


def test_it_resamples_an_empty_frame_to_an_empty_frame() -> None:
    empty = load("ETHBTC-5m.csv").iloc[:0]
    resampled = resample(empty, "1h")
    assert list(resampled.columns) == CANDLE_COLUMNS
    assert len(resampled) == 0


def test_it_refuses_candles_out_of_order() -> None:
    candles = load("ETHBTC-5m.csv").iloc[:10].iloc[::-1]
    with pytest.raises(ValueError, match="ascending"):
        resample(candles, "1h")


def test_it_rejects_an_unknown_target_timeframe() -> None:
    with pytest.raises(ConditionError) as caught:
        resample(load("ETHBTC-5m.csv").iloc[:10], "90m")
    assert caught.value.field == "target_tf"


# --- align_to_base -----------------------------------------------------------


def align_by_loop(base_open, base_tf, other_open, other_tf) -> list[int]:
    other_closes = [next_bar_open(int(opened), other_tf) for opened in other_open]
    found = []
    for opened in base_open:
        base_close = next_bar_open(int(opened), base_tf)
        closed = [i for i, other_close in enumerate(other_closes) if other_close <= base_close]
        found.append(closed[-1] if closed else -1)
    return found


@pytest.mark.parametrize("other_tf", ["15m", "1h", "4h", "1d"])
def test_it_aligns_coarser_candles_to_the_last_one_closed(other_tf: str) -> None:
    base = load("ADABTC-5m.csv").iloc[::7]  # sparse, with the exchange gap
    other = resample(load("ADABTC-5m.csv"), other_tf)
    base_open = base["open_time"].to_numpy()
    other_open = other["open_time"].to_numpy()
    found = align_to_base(base_open, "5m", other_open, other_tf)
    assert found.dtype == np.int64
    assert list(found) == align_by_loop(base_open, "5m", other_open, other_tf)


def test_it_aligns_finer_candles_to_the_last_one_closed_in_the_base_bar() -> None:
    five_minutes = load("ADABTC-5m.csv").iloc[:600]
    hours = resample(five_minutes, "1h")
    found = align_to_base(
        hours["open_time"].to_numpy(), "1h", five_minutes["open_time"].to_numpy(), "5m"
    )
    assert list(found) == align_by_loop(
        hours["open_time"].to_numpy(), "1h", five_minutes["open_time"].to_numpy(), "5m"
    )
    # an hour fully covered by 5m candles is matched with its own last 5m candle
    for hour_index, five_index in enumerate(found):
        hour_close = next_bar_open(int(hours["open_time"].iloc[hour_index]), "1h")
        assert next_bar_open(int(five_minutes["open_time"].iloc[five_index]), "5m") <= hour_close


def test_it_gives_minus_one_before_the_first_coarse_candle_closes() -> None:
    base = load("ETHBTC-5m.csv").iloc[:13]  # 04:55 .. 05:55
    hours = resample(base, "1h")  # 04:00 (closes 05:00) and 05:00 (closes 06:00)
    base_open = base["open_time"].to_numpy()
    found = align_to_base(base_open, "5m", hours["open_time"].to_numpy(), "1h")
    assert list(found) == [0] * 12 + [1]
    found = align_to_base(base_open, "5m", hours["open_time"].to_numpy()[1:], "1h")
    assert list(found) == [-1] * 12 + [0]


def test_it_never_reads_the_bucket_still_forming_when_data_ends_mid_bucket() -> None:
    candles = load("ETHBTC-5m.csv").iloc[:40]  # ends at 08:10, mid-hour
    hours = resample(candles, "1h")
    last_bucket_open = int(hours["open_time"].iloc[-1])
    assert next_bar_open(last_bucket_open, "1h") > next_bar_open(
        int(candles["open_time"].iloc[-1]), "5m"
    )
    found = align_to_base(
        candles["open_time"].to_numpy(), "5m", hours["open_time"].to_numpy(), "1h"
    )
    assert found.max() == len(hours) - 2
    assert found[-1] == len(hours) - 2


ETHBTC = load("ETHBTC-5m.csv")


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(ETHBTC) - 2),
    other_tf=st.sampled_from(["15m", "30m", "1h", "4h", "12h", "1d", "1w"]),
)
def test_values_at_a_base_bar_do_not_change_when_later_data_is_removed(
    cut: int, other_tf: str
) -> None:
    def other_candle_at_each_base_bar(base: pd.DataFrame) -> np.ndarray:
        other = resample(base, other_tf)
        found = align_to_base(
            base["open_time"].to_numpy(), "5m", other["open_time"].to_numpy(), other_tf
        )
        values = other[CANDLE_COLUMNS].to_numpy()
        return np.where((found >= 0)[:, None], values[found], np.nan)

    seen_with_everything = other_candle_at_each_base_bar(ETHBTC)
    seen_up_to_cut = other_candle_at_each_base_bar(ETHBTC.iloc[: cut + 1])
    np.testing.assert_array_equal(seen_up_to_cut, seen_with_everything[: cut + 1])
