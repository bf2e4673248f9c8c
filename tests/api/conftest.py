from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from alerts.services import preview_market
from conditions.marketdata.stub import BinanceStub, run_stub
from tests.factories import UserFactory

KLINES_DIR = Path(__file__).resolve().parent.parent / "data" / "klines"
ETH_FILE = KLINES_DIR / "ETHBTC-5m.csv"
# 2018-01-17 12:02:30 UTC: a week into the ETHBTC file, half-way through a 5m bar.
STUB_START_MS = 1516147200000 + 12 * 3_600_000 + 150_000


@pytest.fixture(autouse=True)
def own_cache_namespace(settings) -> Iterator[None]:
    """A key prefix of its own in the shared Redis for each test: throttle
    counters and cached candles of earlier tests (or earlier runs, whose user
    ids repeat) cannot leak in."""
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = (
        f"{caches['default'].get('KEY_PREFIX', '')}-api-{uuid.uuid4().hex[:10]}"
    )
    settings.CACHES = caches
    # Hashing with the production hasher costs half a second per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    preview_market.cache_clear()
    yield
    preview_market.cache_clear()


@pytest.fixture
def api_client_for(db) -> Callable[..., APIClient]:
    def client_for(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return client_for


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def intruder(db):
    return UserFactory()


@pytest.fixture
def client(api_client_for, user) -> APIClient:
    return api_client_for(user)


@pytest.fixture
def intruder_client(api_client_for, intruder) -> APIClient:
    return api_client_for(intruder)


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


@pytest.fixture
def binance_stub(settings) -> Iterator[BinanceStub]:
    """The local Binance stub replaying ETHBTC 5m candles, its clock frozen;
    the preview's market data rebuilt to point at it."""
    with run_stub([ETH_FILE], speed=0, start=STUB_START_MS) as stub:
        settings.BINANCE_API_URL = stub.url
        preview_market.cache_clear()
        yield stub
    preview_market.cache_clear()


@pytest.fixture
def dead_binance(settings) -> Iterator[str]:
    """BINANCE_API_URL at a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.BINANCE_API_URL = f"http://127.0.0.1:{port}/api"
    preview_market.cache_clear()
    yield settings.BINANCE_API_URL
    preview_market.cache_clear()


FUZZ_TALLY = pytest.StashKey[Counter]()


@pytest.fixture
def fuzz_tally(request) -> Counter:
    """Generated requests per operation, reported at the end of the run."""
    return request.config.stash.setdefault(FUZZ_TALLY, Counter())


def pytest_terminal_summary(terminalreporter, config) -> None:
    tally = config.stash.get(FUZZ_TALLY, None)
    if tally:
        terminalreporter.write_line(
            f"schemathesis: {sum(tally.values())} generated requests over {len(tally)} operations"
        )
