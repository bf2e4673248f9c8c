"""The generated scenario as rows of a scratch PostgreSQL database.

Users, the registry's conditions, the alerts and their links to the
registry, as `alerts.services.save_alert` leaves them, written with COPY: a
hundred thousand alerts load in seconds instead of minutes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from alerts.models import Alert
from conditions.engine.normalize import canonical_json
from conditions.engine.playbook import NormalizedAlert
from conditions.models import Condition
from conditions.services import condition_type
from tradeeon.cli import InputError

from .scenario import AlertSpec


def require_postgresql(part: str) -> None:
    """The benchmark's database parts measure PostgreSQL, as production runs."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.postgresql":
        raise InputError(
            f"{part} needs PostgreSQL (DATABASE_URL=postgres://...), not "
            f"{engine.rsplit('.', 1)[-1]}; or pass --quick --no-database"
        )


@dataclass
class Links:
    """What normalizing the alerts gives the registry: every distinct
    condition, and each alert's conditions."""

    conditions: dict[str, dict] = field(default_factory=dict)
    per_alert: list[list[str]] = field(default_factory=list)

    def add(self, playbook: NormalizedAlert) -> None:
        for step in playbook.steps:
            self.conditions.setdefault(step.condition_id, step.canonical)
        self.per_alert.append(playbook.condition_ids)

    def extend(self, other: Links) -> None:
        for cid, canonical in other.conditions.items():
            self.conditions.setdefault(cid, canonical)
        self.per_alert.extend(other.per_alert)


def links_of(playbooks: Iterable[NormalizedAlert]) -> Links:
    links = Links()
    for playbook in playbooks:
        links.add(playbook)
    return links


def seed(alerts: Sequence[AlertSpec], links: Links) -> None:
    """Write the users, conditions and alerts (primary keys 1..n, in order)."""
    now = timezone.now()
    users = sorted({alert.user for alert in alerts})
    user_ids = {user: index + 1 for index, user in enumerate(users)}
    conditions = links.conditions
    User = get_user_model()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        _copy(
            raw,
            User._meta.db_table,
            ("id", "password", "is_superuser", "username", "first_name", "last_name", "email",
             "is_staff", "is_active", "date_joined"),
            ((user_ids[user], "!", False, f"bench{user}", "", "", "", False, True, now)
             for user in users),
        )  # fmt: skip
        _copy(
            raw,
            Condition._meta.db_table,
            ("condition_id", "condition_type", "symbol", "timeframe", "indicator_config",
             "created_at", "trigger_count"),
            ((cid, condition_type(canonical), canonical["symbol"], canonical["timeframe"],
              canonical_json(canonical), now, 0)
             for cid, canonical in conditions.items()),
        )  # fmt: skip
        _copy(
            raw,
            Alert._meta.db_table,
            ("id", "user_id", "name", "symbol", "base_timeframe", "condition_config", "action",
             "fire_mode", "status", "created_at", "updated_at"),
            ((index + 1, user_ids[alert.user], f"bench {index}", alert.symbol,
              alert.base_timeframe, json.dumps(alert.raw["conditionConfig"]),
              '{"type": "notify"}', alert.raw["fireMode"], Alert.Status.ACTIVE, now, now)
             for index, alert in enumerate(alerts)),
        )  # fmt: skip
        _copy(
            raw,
            Alert.conditions.through._meta.db_table,
            ("alert_id", "condition_id"),
            ((index + 1, cid) for index, ids in enumerate(links.per_alert) for cid in ids),
        )  # fmt: skip
        for model in (User, Alert):
            table = model._meta.db_table
            # Explicit ids leave the identity sequences behind.
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
        # What autovacuum does to freshly loaded tables in a database in use:
        # statistics for the planner, and the visibility map, without which
        # counting a trigger's subscribers in the links' index visits every
        # link in the table as well (0.05 ms a trigger instead of 0.01).
        cursor.execute("VACUUM ANALYZE")


def _copy(cursor, table: str, columns: Sequence[str], rows) -> None:
    # Table and column names come from the models, never from input.
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
