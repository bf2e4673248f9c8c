from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from tradeeon.cache import RedisCache

REDIS_URL = "redis://127.0.0.1:6379/15"  # tests' own Redis database
REPO = Path(__file__).resolve().parents[1]
KLINES_DIR = Path(__file__).parent / "data" / "klines"


def manage(*args: str | Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`python manage.py *args` in a process of its own, as an operator runs it,
    with `env` over this process's environment."""
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "CELERY_SKIP_CHECKS": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def postgres_session(dbname: str | None = None):
    """A psycopg connection of its own to the server Django uses, to its
    database or to `dbname`: another session, as another worker or an
    operator would open."""
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    return psycopg.connect(
        dbname=dbname or db["NAME"],
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
    )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """One PostgreSQL test database per pytest process, so two runs on one
    machine (two clones, or a developer and CI) never drop each other's."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        if database["ENGINE"].endswith("postgresql"):
            database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


@pytest.fixture
def redis_store():
    """A Django RedisCache on db 15 under a key prefix of its own, emptied afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    store = RedisCache(REDIS_URL, {"KEY_PREFIX": prefix})
    yield store
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def klines_dir() -> Path:
    return KLINES_DIR
