from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ENGINE_KLINES_DIR = Path(__file__).resolve().parent.parent / "data" / "klines"


@pytest.fixture(scope="session")
def klines() -> dict[str, pd.DataFrame]:
    """Every real Binance klines file, by file stem ("ETHBTC-5m"), read once
    per session as candle frames. Shared between tests: do not modify them."""
    return {
        path.stem: pd.read_csv(
            path,
            dtype={
                "open_time": "int64",
                **dict.fromkeys(("open", "high", "low", "close", "volume"), "float64"),
            },
        )
        for path in sorted(ENGINE_KLINES_DIR.glob("*.csv"))
    }
