"""Candle files: the CSV of CONDITIONS.md section 8 and Binance's JSON kline rows.

A candle frame has the columns open_time (int64, epoch ms UTC), open, high,
low, close, volume (float64), strictly ascending by open_time, RangeIndex.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["open_time", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
_FILE_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]{2,20})-(?P<timeframe>\d+[a-zA-Z])$")


class CandleFileError(ValueError):
    """A candle file that cannot be read; the message names the file and the problem."""


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({column: np.array([], dtype=np.float64) for column in COLUMNS})
    frame["open_time"] = frame["open_time"].astype(np.int64)
    return frame


def frame_from_rows(rows: list) -> pd.DataFrame:
    """Binance kline rows ([open_time, "open", "high", "low", "close", "volume", ...])."""
    if not rows:
        return empty_frame()
    table = np.asarray([row[:6] for row in rows], dtype=object)
    frame = pd.DataFrame(
        {
            "open_time": table[:, 0].astype(np.int64),
            **{name: table[:, i + 1].astype(np.float64) for i, name in enumerate(PRICE_COLUMNS)},
        }
    )
    return frame


def parse_file_name(path: Path) -> tuple[str | None, str | None]:
    """`ETHBTC-5m.csv` -> ("ETHBTC", "5m"); (None, None) when the name says nothing."""
    match = _FILE_NAME.match(path.stem)
    if not match:
        return None, None
    return match["symbol"].upper(), match["timeframe"]


def load_candles(path: str | Path) -> pd.DataFrame:
    """Read a candle CSV or a JSON array of Binance kline rows, and check it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CandleFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        frame = _read_json(path, stripped)
    else:
        frame = _read_csv(path, text)
    validate_frame(frame, str(path))
    return frame


def _read_json(path: Path, text: str) -> pd.DataFrame:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CandleFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) >= 6 for row in rows
    ):
        raise CandleFileError(
            f"{path}: expected a JSON array of Binance kline rows (arrays of >= 6 items)"
        )
    try:
        return frame_from_rows(rows)
    except (TypeError, ValueError, OverflowError):
        raise CandleFileError(
            f"{path}: a kline row holds a value that is not a number (or is out of range)"
        ) from None


def _read_csv(path: Path, text: str) -> pd.DataFrame:
    header = text.split("\n", 1)[0].strip().replace(" ", "").lower()
    if header != ",".join(COLUMNS):
        raise CandleFileError(f"{path}: the first line must be the header {','.join(COLUMNS)}")
    try:
        frame = pd.read_csv(
            path,
            dtype={"open_time": np.int64, **{name: np.float64 for name in PRICE_COLUMNS}},
            skipinitialspace=True,
        )
    except (ValueError, pd.errors.ParserError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise CandleFileError(f"{path}: malformed CSV ({first_line})") from None
    frame.columns = [column.strip().lower() for column in frame.columns]
    return frame[COLUMNS].reset_index(drop=True)


def validate_frame(frame: pd.DataFrame, name: str) -> None:
    if len(frame) == 0:
        raise CandleFileError(f"{name}: holds no candles")
    values = frame[PRICE_COLUMNS].to_numpy()
    if not np.isfinite(values).all():
        raise CandleFileError(f"{name}: a price or volume is missing or not a finite number")
    if (values < 0).any():
        raise CandleFileError(f"{name}: a price or volume is negative")
    times = frame["open_time"].to_numpy()
    steps = np.diff(times)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 2
        raise CandleFileError(f"{name}: open_time must be strictly increasing (row {row})")
    bad = (frame["high"] < frame[["open", "close", "low"]].max(axis=1)) | (
        frame["low"] > frame[["open", "close"]].min(axis=1)
    )
    if bad.any():
        row = int(np.argmax(bad.to_numpy())) + 1
        raise CandleFileError(f"{name}: high/low do not contain open and close (row {row})")
