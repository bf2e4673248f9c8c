"""Room in each page of the alerts for the row versions evaluation writes.

Every alert that fires gets its last fired bar written, about 8,000 rows of
a 100,000-alert cycle. last_fired_bar is in no index, so with free space on
its page the new version is a heap-only tuple that touches none of the
table's indexes; with full pages (the default) each update moves the row
and inserts into all of them. A tenth of each page is kept free.
"""

from django.db import migrations

from tradeeon.migration_sql import on_postgresql


def fillfactor(percent: int) -> str:
    return f"ALTER TABLE alerts_alert SET (fillfactor = {percent})"


class Migration(migrations.Migration):
    dependencies = [("alerts", "0002_alert_links_know_if_active")]

    operations = [
        migrations.RunPython(on_postgresql(fillfactor(90)), on_postgresql(fillfactor(100)))
    ]
