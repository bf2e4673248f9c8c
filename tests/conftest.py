from __future__ import annotations

from pathlib import Path

import pytest

KLINES_DIR = Path(__file__).parent / "data" / "klines"


@pytest.fixture
def klines_dir() -> Path:
    return KLINES_DIR
