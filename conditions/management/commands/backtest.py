"""python manage.py backtest --candles FILE [--candles FILE ...] --alert ALERT.json"""

from __future__ import annotations

import json
from pathlib import Path

from conditions.engine.backtest import CandleSet, run_backtest
from conditions.engine.candles import CandleFileError, load_candles, parse_file_name
from conditions.engine.errors import ConditionError
from conditions.engine.timeframes import normalize_timeframe
from tradeeon.cli import InputError, StrictCommand


def read_candle_sets(
    paths: list[str], symbol: str | None, timeframe: str | None
) -> list[CandleSet]:
    sets = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such candle file")
        file_symbol, file_timeframe = parse_file_name(Path(path))
        set_symbol = (symbol or file_symbol or "").upper()
        set_timeframe = timeframe or file_timeframe
        if not set_symbol or not set_timeframe:
            raise InputError(
                f"{path}: name it SYMBOL-TIMEFRAME.csv or pass --symbol and --timeframe"
            )
        try:
            set_timeframe = normalize_timeframe(set_timeframe)
            sets.append(CandleSet(set_symbol, set_timeframe, load_candles(path)))
        except (CandleFileError, ConditionError) as exc:
            raise InputError(str(exc)) from None
    return sets


def read_json_file(path: str, what: str) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return document


def add_output_options(parser) -> None:
    """The options every candle-reading command shares."""
    parser.add_argument("--symbol", help="overrides the symbol taken from the file name")
    parser.add_argument("--timeframe", help="overrides the timeframe taken from the file name")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")


class Command(StrictCommand):
    help = "Evaluate an alert bar by bar over historical candles and print one JSON document."
    # It reads files only; skipping the system checks halves its start-up.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--candles",
            action="append",
            required=True,
            metavar="FILE",
            help="CSV or Binance JSON klines; repeatable",
        )
        parser.add_argument(
            "--alert",
            required=True,
            metavar="ALERT.json",
            help="an alert (CONDITIONS.md section 6)",
        )
        add_output_options(parser)

    def handle(self, *args, **options):
        alert = read_json_file(options["alert"], "the alert")
        sets = read_candle_sets(options["candles"], options["symbol"], options["timeframe"])
        try:
            document = run_backtest(alert, sets)
        except ConditionError as exc:
            raise InputError(f"{options['alert']}: {exc}") from None
        self.stdout.write(json.dumps(document, indent=options["indent"]))
