"""Bulk inserts that tell which rows were new.

Two workers evaluating the same bar both try to insert its triggers; the
unique constraint lets one win, and only the winner must dispatch. Django's
bulk_create(ignore_conflicts=True) cannot say which rows it inserted, so this
issues INSERT ... ON CONFLICT DO NOTHING RETURNING (PostgreSQL, SQLite 3.35+).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def insert_new(
    model: type[models.Model],
    rows: Sequence[dict],
    conflict_fields: Sequence[str],
    returning: Sequence[str] = ("id",),
    batch_size: int = 500,
) -> list[tuple]:
    """Insert `rows` (field name -> value), skipping those that collide on
    `conflict_fields`; returns the `returning` columns of the inserted ones."""
    if not rows:
        return []
    meta = model._meta
    names = list(rows[0])
    fields = [meta.get_field(name) for name in names]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    conflict = ", ".join(
        connection.ops.quote_name(meta.get_field(name).column) for name in conflict_fields
    )
    back = ", ".join(connection.ops.quote_name(meta.get_field(name).column) for name in returning)
    table = connection.ops.quote_name(meta.db_table)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    inserted: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            params: list = []
            for row in batch:
                for field, name in zip(fields, names, strict=True):
                    params.append(field.get_db_prep_save(row[name], connection))
            # Only quoted identifiers from the model's metadata are interpolated;
            # every value goes through a parameter.
            sql = (
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(batch))} "  # noqa: S608
                f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {back}"
            )
            cursor.execute(sql, params)
            inserted.extend(cursor.fetchall())
    return inserted
