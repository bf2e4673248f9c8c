"""python manage.py backtest_bot --candles FILE [--candles FILE ...] --bot BOT.json"""

from __future__ import annotations

import json

from bots.dca import BotSettingsError
from bots.simulate import backtest_bot
from conditions.engine.candles import CandleFileError
from conditions.engine.errors import ConditionError
from conditions.management.commands.backtest import (
    add_output_options,
    read_candle_sets,
    read_json_file,
)
from tradeeon.cli import InputError, StrictCommand


class Command(StrictCommand):
    help = (
        "Run a DCA bot's settings over historical candles with the paper exchange's "
        "fills and print one JSON document of its deals (BOTS.md, Bot backtest)."
    )
    # It reads two files and touches no database or URL: the project's
    # system checks say nothing about whether it can run.

    def add_arguments(self, parser):
        parser.add_argument(
            "--candles",
            action="append",
            required=True,
            metavar="FILE",
            help="CSV or Binance JSON klines named SYMBOL-TIMEFRAME; repeatable "
            "(a file per timeframe the entry conditions use)",
        )
        parser.add_argument(
            "--bot",
            required=True,
            metavar="BOT.json",
            help="the settings table as flat fields plus symbol and base_timeframe",
        )
        add_output_options(parser)

    def handle(self, *args, **options):
        bot = read_json_file(options["bot"], "the bot")
        sets = read_candle_sets(options["candles"], options["symbol"], options["timeframe"])
        try:
            document = backtest_bot(bot, sets)
        except (BotSettingsError, ConditionError, CandleFileError) as exc:
            raise InputError(f"{options['bot']}: {exc}") from None
        self.stdout.write(json.dumps(document, indent=options["indent"]))
