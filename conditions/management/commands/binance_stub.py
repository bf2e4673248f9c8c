"""python manage.py binance_stub --port PORT --candles FILE_OR_DIR [--start ISO_TIME] [--speed N]"""

from __future__ import annotations

import logging
import signal
import threading

from conditions.engine.candles import CandleFileError
from conditions.marketdata.replay import ReplayMarket, as_epoch_ms, iso_utc
from conditions.marketdata.stub import BinanceStub
from tradeeon.cli import InputError, StrictCommand

logger = logging.getLogger(__name__)


class Command(StrictCommand):
    help = (
        "Serve candle files (SYMBOL-TIMEFRAME.csv) over Binance's REST API on 127.0.0.1, "
        "replayed as a clock advances. Point BINANCE_API_URL at the URL it prints."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free one)"
        )
        parser.add_argument(
            "--candles",
            action="append",
            required=True,
            metavar="FILE_OR_DIR",
            help="candle file or directory of them; repeatable",
        )
        parser.add_argument(
            "--start",
            help="clock start, ISO-8601 UTC (2018-01-10T12:00:00Z) or epoch ms; default: the first candle",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="clock speed over real time (0 freezes it; default 1)",
        )
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )

    def handle(self, *args, **options):
        port = options["port"]
        if not 0 <= port <= 65535:
            raise InputError(f"--port must be between 0 and 65535, got {port}")
        speed = options["speed"]
        if not speed >= 0 or speed == float("inf"):
            raise InputError(f"--speed must be a finite number >= 0, got {speed}")
        try:
            start = None if options["start"] is None else as_epoch_ms(options["start"])
        except ValueError as exc:
            raise InputError(f"--start: {exc}") from None
        try:
            market = ReplayMarket.from_paths(options["candles"])
        except CandleFileError as exc:
            raise InputError(str(exc)) from None
        try:
            stub = BinanceStub(market, host=options["host"], port=port, speed=speed, start=start)
        except OSError as exc:
            raise InputError(
                f"cannot listen on {options['host']}:{port} ({exc.strerror or exc})"
            ) from None

        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        stub.start()
        series = ", ".join(
            f"{symbol} {'/'.join(market.timeframes(symbol))}" for symbol in market.symbols
        )
        self.stdout.write(f"Binance stub listening on {stub.url}")
        self.stdout.write(
            f"  serving {series}; clock at {iso_utc(stub.now_ms())}, speed {speed:g}x"
        )
        self.stdout.flush()
        try:
            while not stopping.wait(0.2):
                pass
        finally:
            stub.stop()
        self.stdout.write("Binance stub stopped")
