"""`make demo`: the main job on embedded defaults (SQLite, no servers)."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from alerts.sample_data import DEMO_PASSWORD, OPERATOR, load_sample_data


class Command(BaseCommand):
    help = "Set up the sample users, alerts and bot on the embedded database and show them."

    def handle(self, *args, **options):
        db = settings.DATABASES["default"]
        self.stdout.write(f"Database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}")
        call_command("migrate", interactive=False, verbosity=0)
        loaded = load_sample_data()
        self.stdout.write(self.style.SUCCESS(f"Loaded {len(loaded.users)} users: {', '.join(loaded.users)}"))
        self.stdout.write(self.style.SUCCESS(f"Loaded {len(loaded.alerts)} alerts:"))
        for alert in loaded.alerts:
            self.stdout.write(
                f"  #{alert.pk:<3} {alert.user.username:<6} {alert.symbol:<7} {alert.base_timeframe:<3} "
                f"{alert.fire_mode:<13} {alert.action.get('type', 'notify'):<8} {alert.name}"
            )
        for bot in loaded.bots:
            s = bot.settings
            self.stdout.write(
                self.style.SUCCESS(f"Loaded bot #{bot.pk} {bot.name!r}")
                + f" ({bot.kind} on {bot.symbol} {bot.base_timeframe}, base {s['base_order_size']},"
                f" {s['max_safety_orders']} safety orders, take profit {s['take_profit']}%)"
            )
        self.stdout.write(
            f"\nAdmin: `make web`, then http://127.0.0.1:8000/admin/ as {OPERATOR} / {DEMO_PASSWORD}"
        )
