from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import REPO
from tests.marketdata.conftest import ETH_FILE, KLINES_DIR


def manage(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), "binance_stub", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tradeeon.settings", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_time(url: str, process: subprocess.Popen, deadline_s: float = 20) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the stub exited early: {process.communicate()}")
        try:
            return requests.get(f"{url}/v3/time", timeout=1).json()
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail("the stub did not answer in time")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_binance_time_and_stops_cleanly_on_a_signal(stop_signal):
    port = free_port()
    process = subprocess.Popen(
        manage(
            "--port",
            str(port),
            "--candles",
            str(KLINES_DIR),
            "--start",
            "2018-01-20T00:00:00Z",
            "--speed",
            "0",
        ),
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api"
        assert wait_for_time(url, process) == {"serverTime": 1516406400000}
        rows = requests.get(
            f"{url}/v3/klines", params={"symbol": "LTCBTC", "interval": "1h"}, timeout=5
        ).json()
        assert rows[-1][0] == 1516406400000
    finally:
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 0, stderr
    assert stdout.splitlines()[0] == f"Binance stub listening on {url}"
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--port", "0", "--candles", str(KLINES_DIR / "NOPE-5m.csv")], "no such file"),
        (["--port", "0", "--candles", str(ETH_FILE), "--start", "last tuesday"], "--start"),
        (["--port", "0", "--candles", str(ETH_FILE), "--speed", "-2"], "--speed"),
        (["--candles", str(ETH_FILE)], "--port"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_the_problem(args, complaint):
    result = subprocess.run(
        manage(*args), cwd=REPO, env=environment(), capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert complaint in result.stderr
    assert result.stdout == ""
