from __future__ import annotations

import os
from pathlib import Path

import pytest

KLINES_DIR = Path(__file__).parent / "data" / "klines"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """One PostgreSQL test database per pytest process, so two runs on one
    machine (two clones, or a developer and CI) never drop each other's."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        if database["ENGINE"].endswith("postgresql"):
            database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


@pytest.fixture
def klines_dir() -> Path:
    return KLINES_DIR
