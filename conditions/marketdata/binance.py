"""Market data from Binance's REST API through python-binance.

python-binance builds every spot URL as `client.API_URL + "/v3/" + path`
(`BaseClient._create_api_uri`) and pings binance.com in its constructor
unless told `ping=False`. `BinanceSource` points API_URL at the configured
base URL (settings.BINANCE_API_URL, the local stub in tests) and mounts a
transport on the client's session that refuses any other host, so nothing
leaves for binance.com by accident, not even a website or futures call.

Around every request:

- a timeout (settings.BINANCE_TIMEOUT_S);
- bounded retries with exponential backoff for timeouts, 5xx answers, lost
  connections and unreadable bodies;
- 429 and 418 are not retried: they raise `RateLimited(retry_after_s)` and
  record "back off until" for that host, in this process and, when a Django
  cache is given, for every worker. Later calls wait out a short backoff
  rather than hammering, and raise `RateLimited` at once for a long one;
- the weight Binance reports (X-MBX-USED-WEIGHT-1M) is remembered per host,
  and requests sleep a little, more as it nears `weight_limit`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pandas as pd
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException
from django.conf import settings
from django.core.cache.backends.base import BaseCache
from requests.adapters import BaseAdapter, HTTPAdapter

from conditions.engine.candles import frame_from_rows
from conditions.engine.timeframes import normalize_timeframe
from conditions.marketdata.base import (
    FiltersFromExchangeInfo,
    ForeignHostRefused,
    InvalidMarketRequest,
    MarketDataUnavailable,
    RateLimited,
    UnknownInterval,
    UnknownSymbol,
    drop_forming,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Binance always sends Retry-After with 429/418; this covers a proxy that strips it.
DEFAULT_RETRY_AFTER_S = 60.0
MAX_KLINES_PER_REQUEST = 1000


class ProcessBackoff:
    """ "Back off until" per host, shared by every source in this process."""

    _until: dict[str, float] = {}
    _lock = threading.Lock()

    def until(self, host: str) -> float:
        with self._lock:
            return self._until.get(host, 0.0)

    def extend(self, host: str, until: float) -> None:
        with self._lock:
            self._until[host] = max(self._until.get(host, 0.0), until)


class CacheBackoff:
    """The same, in a Django cache (Redis in production), so all workers see it."""

    def __init__(self, cache: BaseCache, key_prefix: str = "marketdata:backoff") -> None:
        self.cache = cache
        self.key_prefix = key_prefix

    def _key(self, host: str) -> str:
        return f"{self.key_prefix}:{host}"

    def until(self, host: str) -> float:
        try:
            return float(self.cache.get(self._key(host)) or 0.0)
        except Exception:
            # A cache outage must not stop market data; the process store still holds.
            logger.warning("backoff cache unreadable", exc_info=True)
            return 0.0

    def extend(self, host: str, until: float) -> None:
        timeout = max(1, math.ceil(until - time.time()) + 1)
        try:
            if until > self.until(host):
                self.cache.set(self._key(host), until, timeout=timeout)
        except Exception:
            logger.warning("backoff cache unwritable", exc_info=True)


class _UsedWeight:
    """Last X-MBX-USED-WEIGHT-1M seen per host in this process."""

    _seen: dict[str, tuple[int, float]] = {}
    _lock = threading.Lock()

    @classmethod
    def record(cls, host: str, weight: int) -> None:
        with cls._lock:
            cls._seen[host] = (weight, time.monotonic())

    @classmethod
    def current(cls, host: str) -> int:
        with cls._lock:
            weight, seen_at = cls._seen.get(host, (0, 0.0))
        # The counter covers one minute; an older reading says nothing about now.
        return weight if time.monotonic() - seen_at < 60 else 0


class _RefuseOtherHosts(BaseAdapter):
    def __init__(self, allowed: str) -> None:
        super().__init__()
        self.allowed = allowed

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        raise ForeignHostRefused(
            f"refusing to send {request.method} {request.url}: only {self.allowed} is configured"
        )

    def close(self) -> None:
        pass


def bound_client(
    base_url: str, timeout_s: float, api_key: str | None = None, api_secret: str | None = None
) -> Client:
    """A python-binance Client that talks to `base_url` and nowhere else."""
    base_url = base_url.rstrip("/")
    client = Client(api_key, api_secret, ping=False, requests_params={"timeout": timeout_s})
    for attribute in ("API_URL", "API_TESTNET_URL", "API_DEMO_URL"):
        setattr(client, attribute, base_url)
    refuse = _RefuseOtherHosts(base_url)
    client.session.mount("http://", refuse)
    client.session.mount("https://", refuse)
    # requests picks the longest matching prefix, so only our base URL gets through.
    client.session.mount(base_url + "/", HTTPAdapter())
    return client


class BinanceSource(FiltersFromExchangeInfo):
    """Binance market data (or the stub's) as candle frames."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_s: float | None = None,
        max_attempts: int = 4,
        retry_base_s: float = 0.25,
        retry_max_s: float = 4.0,
        weight_limit: int = 1200,
        weight_soft_ratio: float = 0.8,
        throttle_max_s: float = 1.0,
        max_wait_s: float = 10.0,
        backoff_cache: BaseCache | None = None,
        exchange_info_ttl_s: float = 600.0,
    ) -> None:
        base_url = base_url or settings.BINANCE_API_URL
        timeout_s = settings.BINANCE_TIMEOUT_S if timeout_s is None else timeout_s
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"BINANCE_API_URL must be an http(s) URL ending in /api, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.host = parts.netloc.lower()
        self.timeout_s = float(timeout_s)
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.weight_limit = weight_limit
        self.weight_soft_ratio = weight_soft_ratio
        self.throttle_max_s = throttle_max_s
        self.max_wait_s = max_wait_s
        self.exchange_info_ttl_s = exchange_info_ttl_s
        self._backoffs: list[ProcessBackoff | CacheBackoff] = [ProcessBackoff()]
        if backoff_cache is not None:
            self._backoffs.append(CacheBackoff(backoff_cache))
        # python-binance keeps the last response on the client and requests
        # sessions are not thread-safe: one client per thread.
        self._local = threading.local()
        self._exchange_info: tuple[float, dict[str, Any]] | None = None
        self._exchange_info_lock = threading.Lock()

    # --- public API ---------------------------------------------------------
    def server_time_ms(self) -> int:
        return int(self._call("time", lambda client: client.get_server_time())["serverTime"])

    def exchange_info(self) -> dict[str, Any]:
        """Binance's exchangeInfo, kept for `exchange_info_ttl_s` (it costs 20 weight)."""
        with self._exchange_info_lock:
            if (
                self._exchange_info
                and time.monotonic() - self._exchange_info[0] < self.exchange_info_ttl_s
            ):
                return self._exchange_info[1]
        info = self._call("exchangeInfo", lambda client: client.get_exchange_info())
        with self._exchange_info_lock:
            self._exchange_info = (time.monotonic(), info)
        return info

    def klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = MAX_KLINES_PER_REQUEST,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        """Up to `limit` klines as a candle frame; the last may still be forming."""
        params: dict[str, Any] = {
            "symbol": symbol.upper(),
            "interval": normalize_timeframe(timeframe),
            "limit": max(1, min(int(limit), MAX_KLINES_PER_REQUEST)),
        }
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        rows = self._call("klines", lambda client: client.get_klines(**params), params["symbol"])
        return frame_from_rows(rows)

    def closed_klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        limit: int = MAX_KLINES_PER_REQUEST,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        """Klines that had closed by the server's clock; `attrs["server_time_ms"]` says when.

        The server time is asked first: a candle closed then was closed when
        the klines were served. Asked after, a candle still forming when
        served could pass for closed.
        """
        timeframe = normalize_timeframe(timeframe)
        server_time = self.server_time_ms()
        candles = self.klines(symbol, timeframe, start_ms=start_ms, limit=limit, end_ms=end_ms)
        return drop_forming(candles, timeframe, server_time)

    # --- transport ------------------------------------------------------------
    def client(self) -> Client:
        """This thread's python-binance Client, bound to the base URL (for endpoints not wrapped here)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = bound_client(self.base_url, self.timeout_s)
            self._local.client = client
        return client

    def _call(self, name: str, request: Callable[[Client], T], symbol: str = "") -> T:
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            self._wait_for_backoff()
            self._throttle()
            client = self.client()
            try:
                result = request(client)
            except BinanceAPIException as exc:
                self._record_weight(exc.response)
                if exc.status_code in (429, 418):
                    raise self._rate_limited(exc) from None
                if exc.status_code < 500:
                    raise self._rejected(exc, symbol) from None
                last_problem = f"HTTP {exc.status_code} ({exc.message})"
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            except BinanceRequestException as exc:
                last_problem = f"unreadable answer: {exc.message[:200]}"
            else:
                self._record_weight(client.response)
                return result
            if attempt < self.max_attempts:
                delay = min(self.retry_base_s * 2 ** (attempt - 1), self.retry_max_s)
                logger.warning(
                    "Binance %s failed (%s), attempt %d of %d; retrying in %.2f s",
                    name,
                    last_problem,
                    attempt,
                    self.max_attempts,
                    delay,
                )
                time.sleep(delay)
        raise MarketDataUnavailable(
            f"Binance {name} at {self.base_url} failed {self.max_attempts} times; last: {last_problem}"
        )

    def _rate_limited(self, exc: BinanceAPIException) -> RateLimited:
        header = exc.response.headers.get("Retry-After") if exc.response is not None else None
        try:
            retry_after = float(header) if header is not None else DEFAULT_RETRY_AFTER_S
        except ValueError:
            retry_after = DEFAULT_RETRY_AFTER_S
        until = time.time() + retry_after
        for store in self._backoffs:
            store.extend(self.host, until)
        logger.warning(
            "Binance answered %s (code %s): backing off %s for %.0f s",
            exc.status_code,
            exc.code,
            self.host,
            retry_after,
        )
        return RateLimited(retry_after, exc.status_code)

    @staticmethod
    def _rejected(exc: BinanceAPIException, symbol: str) -> InvalidMarketRequest:
        if exc.code == -1121:
            return UnknownSymbol(symbol)
        if exc.code == -1120:
            return UnknownInterval("", exc.message or "Invalid interval.")
        return InvalidMarketRequest(exc.code, exc.message or "", exc.status_code)

    def _wait_for_backoff(self) -> None:
        remaining = max(store.until(self.host) for store in self._backoffs) - time.time()
        if remaining <= 0:
            return
        if remaining > self.max_wait_s:
            raise RateLimited(remaining)
        logger.info("waiting %.2f s for Binance's backoff on %s", remaining, self.host)
        time.sleep(remaining)

    def throttle_delay_s(self) -> float:
        """How long the next request waits because of the weight used this minute."""
        used = _UsedWeight.current(self.host)
        soft_limit = self.weight_limit * self.weight_soft_ratio
        if used < soft_limit:
            return 0.0
        # Grows from a small pause at the soft limit to throttle_max_s at the limit.
        share = (used - soft_limit + 1) / max(self.weight_limit - soft_limit + 1, 1)
        return self.throttle_max_s * min(share, 1.0)

    def _throttle(self) -> None:
        delay = self.throttle_delay_s()
        if delay > 0:
            logger.info(
                "Binance weight %d of %d used: pausing %.2f s",
                _UsedWeight.current(self.host),
                self.weight_limit,
                delay,
            )
            time.sleep(delay)

    def _record_weight(self, response: requests.Response | None) -> None:
        if response is None:
            return
        header = response.headers.get(WEIGHT_HEADER)
        if header and header.isdigit():
            _UsedWeight.record(self.host, int(header))
