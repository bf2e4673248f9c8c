"""manage.py prune: what beat's hourly `prune` task does, from the command
line, or with --dry-run what it would delete (alerts/retention.py)."""

from __future__ import annotations

import argparse

from django.conf import settings
from django.core.management.base import CommandError

from alerts import evaluation, retention
from conditions.marketdata.base import MarketDataError
from tradeeon.cli import StrictCommand


def days(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of days, at least 1, got {value!r}"
        )
    return number


class Command(StrictCommand):
    help = "Delete evaluation cache rows and done outbox messages past their retention."

    def add_arguments(self, parser):
        parser.add_argument(
            "--cache-days",
            type=days,
            default=None,
            help="days of evaluation cache kept, by market time "
            f"(default EVALUATION_CACHE_RETENTION_DAYS, {settings.EVALUATION_CACHE_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--outbox-days",
            type=days,
            default=None,
            help="days done outbox messages are kept "
            f"(default OUTBOX_RETENTION_DAYS, {settings.OUTBOX_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )

    def handle(self, *args, cache_days, outbox_days, dry_run, **options):
        try:
            now_ms = evaluation.market().source.server_time_ms()
        except MarketDataError as exc:
            raise CommandError(f"cannot read the market's clock, nothing deleted: {exc}") from exc
        pruned = retention.prune(
            now_ms, cache_days=cache_days, outbox_days=outbox_days, dry_run=dry_run
        )
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"evaluation cache: {verb} {pruned.evaluations} row(s) of bars opened before "
            f"{pruned.cache_before:%Y-%m-%d %H:%M} UTC (market time)"
        )
        for symbol, before in sorted(pruned.kept_for_bots.items()):
            kept = "every bar" if before is None else f"bars from {before:%Y-%m-%d %H:%M} UTC"
            self.stdout.write(f"  {symbol}: {kept} kept for bots' entries")
        self.stdout.write(
            f"outbox: {verb} {pruned.outbox_messages} done message(s) finished before "
            f"{pruned.outbox_before:%Y-%m-%d %H:%M} UTC"
        )
