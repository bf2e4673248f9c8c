"""A local stand-in for Binance's REST API, replaying candle files.

It speaks the part of /api/v3 that python-binance calls for market data
(ping, time, exchangeInfo, klines), in Binance's shapes: 12-field kline rows
with prices as 8-decimal strings, errors as {"code": -1121, "msg": "..."},
and an X-MBX-USED-WEIGHT-1M header on every answer. Its clock starts at
`start` and runs `speed` times faster than real time; it shows only candles
opened by that clock, the last one part-way (see conditions.marketdata.replay).

Tests and the demo steer it from Python or over HTTP:

- `inject_fault(kind, count, retry_after, seconds, path)` / POST /_stub/fault:
  the next `count` API requests (optionally only those under `path`) get
  "429" or "418" (with Retry-After, code -1003), "500", "hang" (no answer
  for `seconds`, default longer than any client timeout, then a normal one)
  or "drop" (connection closed without an answer). DELETE /_stub/fault clears.
- `set_time(ms)`, `advance(ms)`, `set_speed(x)` / POST /_stub/clock with
  {"time_ms"|"time"|"advance_ms"|"speed"}; GET /_stub/clock reads it.
- `request_log()` / GET /_stub/requests: what was asked, to count fetches.

Endpoints live in a route table (see conditions.marketdata.stub_endpoints):
another module adds order endpoints with
`stub.add_route("POST", "/api/v3/order", handler, weight=1)` without touching
the server.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from conditions.marketdata.base import InvalidMarketRequest
from conditions.marketdata.replay import (
    DEFAULT_WEIGHT_LIMIT,
    Clock,
    ReplayMarket,
    as_epoch_ms,
)
from conditions.marketdata.stub_endpoints import (
    Handler,
    Route,
    StubError,
    StubRequest,
    StubResponse,
    add_market_data_routes,
)
from conditions.marketdata.stub_orders import add_order_routes

logger = logging.getLogger(__name__)

# "accept_drop" does the work (an order is placed) and then drops the connection
# without answering: the client cannot tell whether its order exists.
FAULT_KINDS = ("429", "418", "500", "hang", "drop", "accept_drop")
DEFAULT_HANG_S = 600.0
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
MINUTE_MS = 60_000


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    params: dict[str, str]
    status: int | None
    clock_ms: int
    fault: str | None = None


@dataclass
class Fault:
    kind: str
    remaining: int
    retry_after_s: float
    seconds: float
    path: str | None


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], stub: BinanceStub) -> None:
        self.stub = stub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _StubHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Keep-alive connections would otherwise outlive the stub and leave
        # clients talking to a server that no longer answers.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BinanceStub/1.0"
    # Headers and body leave in one segment; split, Nagle and delayed ACKs
    # would add ~40 ms to every answer.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _StubServer

    def do_GET(self) -> None:
        self.server.stub.handle_http(self)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("stub %s " + format, self.address_string(), *args)


class BinanceStub:
    """The server; `start()` serves from a background thread (see `run_stub`)."""

    def __init__(
        self,
        market: ReplayMarket,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        start: int | str | datetime | None = None,
        weight_limit: int | None = None,
    ) -> None:
        self.market = market
        start_ms = market.first_open_ms if start is None else as_epoch_ms(start)
        self.clock = Clock(start_ms, speed=speed)
        # None: report weight but never refuse; an int: answer 429 beyond it, as Binance does.
        self.weight_limit = weight_limit
        self._routes: dict[tuple[str, str], Route] = {}
        self._faults: deque[Fault] = deque()
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._weight_minute: int | None = None
        self._used_weight = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = _StubServer((host, port), self)
        add_market_data_routes(self)
        self.orders = add_order_routes(self)

    # --- lifecycle ---------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL for BINANCE_API_URL (python-binance appends /v3/...)."""
        return f"{self.origin}/api"

    def start(self) -> BinanceStub:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"binance-stub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Binance stub serving %s at %s", ", ".join(self.market.symbols), self.url)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> BinanceStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- clock -------------------------------------------------------------
    def now_ms(self) -> int:
        return self.clock.now_ms()

    def set_time(self, ms: int | str | datetime) -> None:
        self.clock.set(as_epoch_ms(ms))

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    def set_speed(self, speed: float) -> None:
        self.clock.set_speed(speed)

    # --- faults and the request log ---------------------------------------
    def inject_fault(
        self,
        kind: str,
        count: int = 1,
        retry_after: float = 1,
        seconds: float | None = None,
        path: str | None = None,
    ) -> None:
        """Make the next `count` API requests (under `path`, if given) fail as `kind`."""
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (one of {', '.join(FAULT_KINDS)})")
        if count < 1 or retry_after < 0 or (seconds is not None and seconds < 0):
            raise ValueError("count must be >= 1, retry_after and seconds >= 0")
        fault = Fault(
            kind,
            int(count),
            float(retry_after),
            DEFAULT_HANG_S if seconds is None else float(seconds),
            path,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def request_log(self, path: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [record for record in self._log if path is None or record.path == path]

    def request_count(self, path: str | None = None) -> int:
        return len(self.request_log(path))

    def clear_request_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def used_weight(self) -> int:
        with self._lock:
            return self._current_weight(self.now_ms())

    # --- routes ------------------------------------------------------------
    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        weight: int | Callable[[StubRequest], int] = 1,
    ) -> None:
        self._routes[(method.upper(), path)] = Route(handler, weight)

    # --- HTTP ----------------------------------------------------------------
    def handle_http(self, http: _StubHandler) -> None:
        split = urlsplit(http.path)
        path = split.path
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        length_header = http.headers.get("Content-Length") or "0"
        if not length_header.isdigit():
            http.close_connection = True
            self._send(http, StubResponse({"code": -1000, "msg": "Bad Content-Length."}, 400))
            return
        body = http.rfile.read(int(length_header)) if int(length_header) > 0 else b""
        if body and "x-www-form-urlencoded" in http.headers.get("Content-Type", ""):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        method = http.command.upper()
        now_ms = self.now_ms()
        request = StubRequest(method, path, params, body, dict(http.headers.items()), now_ms)

        if path.startswith("/_stub/"):
            self._send(http, self._control(request))
            return

        fault = self._take_fault(path)
        if fault is not None and fault.kind == "hang":
            # Logged on arrival with no status: the client has usually given up
            # before the answer, and tests look at the log meanwhile.
            self._record(request, None, fault.kind)
            if self._stopping.wait(fault.seconds):
                http.close_connection = True
                return
            request = StubRequest(method, path, params, body, request.headers, self.now_ms())
            self._send(http, self._answer(request))
            return
        if fault is not None and fault.kind == "accept_drop":
            response = self._answer(request)
            self._record(request, response.status, fault.kind)
            http.close_connection = True
            return
        if fault is not None:
            self._record(request, None if fault.kind == "drop" else int(fault.kind), fault.kind)
            if fault.kind == "drop":
                http.close_connection = True
                return
            self._send(http, self._fault_response(fault, request.now_ms))
            return

        response = self._answer(request)
        self._record(request, response.status, None)
        self._send(http, response)

    def _answer(self, request: StubRequest) -> StubResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            known_path = any(path == request.path for _, path in self._routes)
            status = 405 if known_path else 404
            return self._with_weight(
                StubResponse(
                    {"code": -1000, "msg": f"No {request.method} {request.path}."}, status
                ),
                request.now_ms,
            )
        try:
            weight = route.weight(request) if callable(route.weight) else route.weight
        except StubError as exc:
            weight, early_error = 1, exc
        else:
            early_error = None
        used = self._charge(weight, request.now_ms)
        if self.weight_limit is not None and used > self.weight_limit:
            return self._too_much_weight(request.now_ms)
        try:
            if early_error is not None:
                raise early_error
            result = route.handler(request)
            response = result if isinstance(result, StubResponse) else StubResponse(result)
        except StubError as exc:
            response = StubResponse({"code": exc.code, "msg": exc.msg}, exc.status)
        except InvalidMarketRequest as exc:
            response = StubResponse({"code": exc.code, "msg": exc.message}, exc.status)
        except Exception:
            logger.exception("stub: %s %s failed", request.method, request.path)
            response = StubResponse({"code": -1001, "msg": "Internal error."}, 500)
        return self._with_weight(response, request.now_ms)

    def _control(self, request: StubRequest) -> StubResponse:
        try:
            if request.path == "/_stub/fault" and request.method == "POST":
                spec = request.json()
                self.inject_fault(
                    str(spec.get("kind")),
                    count=int(spec.get("count", 1)),
                    retry_after=float(spec.get("retry_after", 1)),
                    seconds=None if spec.get("seconds") is None else float(spec["seconds"]),
                    path=spec.get("path"),
                )
                with self._lock:
                    return StubResponse({"queued": len(self._faults)})
            if request.path == "/_stub/fault" and request.method == "DELETE":
                self.clear_faults()
                return StubResponse({"queued": 0})
            if request.path == "/_stub/clock" and request.method == "POST":
                spec = request.json()
                if "speed" in spec:
                    self.set_speed(float(spec["speed"]))
                if "time_ms" in spec:
                    self.set_time(int(spec["time_ms"]))
                if "time" in spec:
                    self.set_time(spec["time"])
                if "advance_ms" in spec:
                    self.advance(int(spec["advance_ms"]))
                return StubResponse({"serverTime": self.now_ms(), "speed": self.clock.speed})
            if request.path == "/_stub/clock" and request.method == "GET":
                return StubResponse({"serverTime": self.now_ms(), "speed": self.clock.speed})
            if request.path == "/_stub/requests" and request.method == "GET":
                return StubResponse(
                    [
                        {
                            "method": record.method,
                            "path": record.path,
                            "params": record.params,
                            "status": record.status,
                            "clock_ms": record.clock_ms,
                            "fault": record.fault,
                        }
                        for record in self.request_log(request.params.get("path"))
                    ]
                )
        except StubError as exc:
            return StubResponse({"code": exc.code, "msg": exc.msg}, exc.status)
        except (ValueError, TypeError, AttributeError) as exc:
            return StubResponse({"code": -1130, "msg": f"Invalid stub control request: {exc}"}, 400)
        return StubResponse({"code": -1000, "msg": f"No {request.method} {request.path}."}, 404)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or path.startswith(fault.path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: Fault, now_ms: int) -> StubResponse:
        retry_after = {"Retry-After": str(math.ceil(fault.retry_after_s))}
        if fault.kind == "429":
            body = {
                "code": -1003,
                "msg": "Too much request weight used; current limit is "
                f"{self.weight_limit or DEFAULT_WEIGHT_LIMIT} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
            }
            response = StubResponse(body, 429, retry_after)
        elif fault.kind == "418":
            banned_until = now_ms + int(fault.retry_after_s * 1000)
            body = {
                "code": -1003,
                "msg": f"Way too much request weight used; IP banned until {banned_until}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
            }
            response = StubResponse(body, 418, retry_after)
        else:
            body = {
                "code": -1001,
                "msg": "Internal error; unable to process your request. Please try again.",
            }
            response = StubResponse(body, 500)
        return self._with_weight(response, now_ms)

    def _too_much_weight(self, now_ms: int) -> StubResponse:
        next_minute_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS
        speed = self.clock.speed
        wait_s = 60.0 if speed == 0 else (next_minute_ms - now_ms) / 1000 / speed
        fault = Fault("429", 1, max(wait_s, 1.0), 0.0, None)
        return self._fault_response(fault, now_ms)

    # --- weight ----------------------------------------------------------------
    def _current_weight(self, now_ms: int) -> int:
        minute = now_ms // MINUTE_MS
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._used_weight = 0
        return self._used_weight

    def _charge(self, weight: int, now_ms: int) -> int:
        with self._lock:
            self._used_weight = self._current_weight(now_ms) + int(weight)
            return self._used_weight

    def _with_weight(self, response: StubResponse, now_ms: int) -> StubResponse:
        with self._lock:
            response.headers.setdefault(WEIGHT_HEADER, str(self._current_weight(now_ms)))
        return response

    def _record(self, request: StubRequest, status: int | None, fault: str | None) -> None:
        with self._lock:
            self._log.append(
                RequestRecord(
                    request.method, request.path, request.params, status, request.now_ms, fault
                )
            )

    def _send(self, http: _StubHandler, response: StubResponse) -> None:
        payload = json.dumps(response.body, separators=(",", ":")).encode()
        try:
            http.send_response(response.status)
            http.send_header("Content-Type", "application/json;charset=UTF-8")
            http.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                http.send_header(name, value)
            http.end_headers()
            http.wfile.write(payload)
            http.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout during a "hang"): nothing to tell it.
            http.close_connection = True


@contextmanager
def run_stub(
    candles: ReplayMarket | str | Path | Iterable[str | Path],
    *,
    speed: float = 1.0,
    start: int | str | datetime | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    weight_limit: int | None = None,
) -> Iterator[BinanceStub]:
    """A stub serving from a thread for the duration of a `with` block; `stub.url` is its base URL."""
    market = candles if isinstance(candles, ReplayMarket) else ReplayMarket.from_paths(candles)
    stub = BinanceStub(
        market, host=host, port=port, speed=speed, start=start, weight_limit=weight_limit
    )
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
