"""Room in every page of the registry for its counters' updates.

Each evaluation updates the counters of every condition it evaluated, about
100,000 rows a cycle at scale. With half of each page kept free, PostgreSQL
writes the new row version into the same page without touching the
registry's indexes (a heap-only tuple); with full pages every update moves
the row and inserts into each of its three indexes: seven to nine times the
cost, measured on 105,000 rows.
"""

from django.db import migrations

from tradeeon.migration_sql import on_postgresql


def fillfactor(percent: int) -> str:
    return f"ALTER TABLE condition_registry SET (fillfactor = {percent})"


class Migration(migrations.Migration):
    dependencies = [("conditions", "0003_evaluation_cache_one_index")]

    operations = [
        migrations.RunPython(on_postgresql(fillfactor(50)), on_postgresql(fillfactor(100)))
    ]
