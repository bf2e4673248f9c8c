"""Requests per second and latency of the API under a loopback load.

wrk is not installed, so this is a small asyncio load generator: `--concurrency`
clients, each sending one request after another over a fresh connection
(gunicorn's sync workers close every connection after its answer), for
`--duration` seconds per scenario. Latency is from connect to the last byte.

It first seeds the database the server uses (same environment: DATABASE_URL,
REDIS_URL...): `--users` users with a token each, and `--alerts` alerts per
user, so that GET /api/alerts/ returns a full default page. Requests are spread
over the users, which keeps each user's throttle history at a realistic size.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tradeeon_bench \\
    REDIS_URL=redis://127.0.0.1:6379/0 CACHE_KEY_PREFIX=bench \\
    API_RATE_USER=100000/min API_RATE_REGISTER=100000/min \\
    .venv/bin/gunicorn tradeeon.wsgi --bind 127.0.0.1:8077 --workers 4 &

    (same environment) .venv/bin/python scripts/bench_api.py --url http://127.0.0.1:8077

Scenarios: list-alerts (GET /api/alerts/), register-existing (POST
/api/conditions/register of a condition already registered: normalize and
look up) and register-new (a new condition each time: normalize and insert).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SCENARIOS = ("list-alerts", "register-existing", "register-new")
BENCH_USER_PREFIX = "bench-api-"


def seed(users: int, alerts_per_user: int) -> list[str]:
    """Users, their tokens and alerts, created once and reused by later runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradeeon.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from alerts.models import Alert
    from alerts.services import create_alert

    tokens = []
    for index in range(users):
        user, _ = get_user_model().objects.get_or_create(username=f"{BENCH_USER_PREFIX}{index}")
        missing = alerts_per_user - Alert.objects.filter(user=user).count()
        for n in range(max(0, missing)):
            create_alert(
                user=user,
                symbol="BTCUSDT",
                base_timeframe="15m",
                name=f"bench {n}",
                condition_config={
                    "mode": "simple",
                    "logic": "OR",
                    "conditions": [
                        {"indicator": "RSI", "operator": "<", "compareValue": 20 + n % 20},
                        {"indicator": "EMA", "operator": "crosses_above", "period": 10 + n},
                    ],
                },
            )
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    return tokens


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)


def request_bytes(scenario: str, host: str, token: str, serial: int) -> bytes:
    if scenario == "list-alerts":
        method, path, body = "GET", "/api/alerts/", b""
    else:
        value = 30 if scenario == "register-existing" else serial
        condition = {
            "symbol": "BTCUSDT",
            "timeframe": "1h",
            "indicator": "RSI",
            "operator": "crosses_below",
            "value": value,
            "period": 14,
        }
        method, path, body = "POST", "/api/conditions/register", json.dumps(condition).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
        f"Accept: application/json\r\nConnection: close\r\n"
    )
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def one_request(host: str, port: int, payload: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        answer = await reader.read()  # until the server closes
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


async def client(
    scenario: str, url: str, tokens: list[str], index: int, deadline: float, tally: Tally, serial
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    token = tokens[index % len(tokens)]
    while time.perf_counter() < deadline:
        payload = request_bytes(scenario, parts.netloc, token, next(serial))
        started = time.perf_counter()
        try:
            status = await one_request(host, port, payload)
        except (OSError, IndexError, ValueError) as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.statuses[status] += 1


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


async def run_scenario(
    scenario: str, url: str, tokens: list[str], concurrency: int, duration: float
) -> dict:
    # A short warm-up so that every gunicorn worker has imported and connected.
    warm = Tally()
    # register-new: values no earlier run registered.
    serial = iter(range(time.time_ns() // 1000, 10**18))
    deadline = time.perf_counter() + min(2.0, duration / 5)
    await asyncio.gather(
        *(client(scenario, url, tokens, i, deadline, warm, serial) for i in range(concurrency))
    )
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(client(scenario, url, tokens, i, deadline, tally, serial) for i in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies_ms)
    return {
        "scenario": scenario,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8077")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--alerts", type=int, default=50, help="alerts per user")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    args = parser.parse_args()

    tokens = seed(args.users, args.alerts)
    results = [
        asyncio.run(run_scenario(name, args.url, tokens, args.concurrency, args.duration))
        for name in args.scenario or SCENARIOS
    ]
    print(
        f"{'scenario':<18} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  statuses"
    )
    for r in results:
        print(
            f"{r['scenario']:<18} {r['requests']:>8} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}  "
            f"{r['statuses']} {r['errors'] or ''}"
        )


if __name__ == "__main__":
    main()
