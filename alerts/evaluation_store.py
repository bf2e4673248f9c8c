"""What one pair's evaluation writes, in its one transaction.

The registry's cache rows, condition triggers (with their subscriber counts,
the registry's trigger counters and outbox rows), alert triggers
(with their alerts' last fired bar, `once` transitions and outbox rows), and
the evaluation cursor.

On PostgreSQL the statements are queued in one pipeline and answered
together: the whole write costs one round trip to the database instead of one
per statement, and on a busy machine each round trip costs a millisecond of
waiting for the other process to be scheduled. The large columns go as
binary arrays built with numpy. Elsewhere (SQLite, the embedded default) the
same writes go through the ORM, one after another.
"""

from __future__ import annotations

import json
import struct
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import psycopg
from django.db import connection
from django.db.models import F
from psycopg.adapt import Dumper
from psycopg.pq import Format

from conditions.bulk import insert_new
from conditions.engine.plan import SeriesColumns
from conditions.models import BarEvaluation, Condition, ConditionTrigger, EvaluationCursor
from conditions.services import registry_row, subscriber_counts

from .models import Alert, AlertTrigger, OutboxMessage


@dataclass
class EvaluatedBars(SeriesColumns):
    """Every condition evaluated at each bar of an evaluation, as columns
    (one row per bar and condition, bar by bar), with the bars' open times:
    what the registry's cache rows, counters and triggers are written from."""

    times: list[datetime]


@dataclass
class Written:
    condition_triggers: int = 0
    alert_triggers: int = 0
    # Alerts that fired in the evaluation but were no longer active: nothing
    # was written for them, and the pair's alerts must be read again.
    inactive_alerts: int = 0
    outbox_ids: list[int] = field(default_factory=list)
    # A new registry generation of the symbol, at which every registry row
    # written to was found (PostgreSQL; see pair_writes).
    generation: int | None = None


@dataclass
class AlertFirings:
    """The alert triggers an evaluation decided on."""

    rows: list[dict] = field(default_factory=list)  # alert_id, bar_open_time, fired_at, snapshot
    last_fired: dict[int, datetime] = field(default_factory=dict)  # per alert, its last bar fired
    once: list[int] = field(default_factory=list)  # `once` alerts that fired: now triggered


class RegistryMoved(Exception):
    """Registry rows this process remembered as present are gone: the
    evaluation is written again, registering them first."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__(f"{len(ids)} registry conditions are gone")
        self.ids = ids


@contextmanager
def pair_writes(now: datetime, symbol: str, checked: int | None) -> Iterator[PairWrites]:
    """The writer for this database, inside the caller's transaction, which
    holds the symbol's write lock from its first statement to its end.

    `checked`: the symbol's registry generation at which the caller last
    found every registry row it knows of; while it is unchanged, none has
    been deleted, and the registry rows are not looked up again (about
    100,000 lookups a cycle in `manage.py bench`). Otherwise they are, and
    `Written.generation` is the new one."""
    if connection.vendor != "postgresql":
        # SQLite has one writer at a time anyway.
        yield PairWrites(now)
        return
    with pipeline():
        binary_cursor().execute(_LOCK_SYMBOL, [_SYMBOL_LOCKS, symbol])
        binary_cursor().execute(_ENSURE_GENERATION, [symbol])
        yield PostgresWrites(now, checked)


# The registry rows an evaluation writes all belong to its symbol (alerts are
# evaluated on their own symbol's conditions), and the pairs of a symbol
# share rows: a 4h condition in 1h alerts is counted by both the 1h and the
# 4h pair. Two transactions locking shared rows in different orders would
# deadlock, and an UPDATE's order is its plan's. So a symbol's evaluations
# write one at a time, under a transaction-level advisory lock taken before
# anything else; their rows then have a single writer, in any order. The
# lock is held for the write only (a few milliseconds), never while candles
# are fetched or the engine runs. Deleting a registry row takes it too
# (conditions migration 0007), keyed by the same hash of the symbol.
_LOCK_SYMBOL = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
_SYMBOL_LOCKS = 0x7464  # the advisory lock namespace of symbols' writes

# Written before the evaluation's statement, under the lock: the symbol's row
# of registry generations (conditions migration 0007), which a deletion of
# one of its registry rows moves to a new value.
_ENSURE_GENERATION = (
    "INSERT INTO condition_registry_generations (symbol) VALUES (%s) ON CONFLICT DO NOTHING"
)


@contextmanager
def pipeline() -> Iterator[None]:
    """A psycopg pipeline on the connection Django holds, checked first as
    Django's own cursors check it (CONN_HEALTH_CHECKS: a connection the
    server dropped is replaced rather than failing every evaluation until it
    ages out), its errors raised as Django's. Statements go in through
    `binary_cursor`."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


class PairWrites:
    """The writes through the ORM, each as it is asked for."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.written = Written()

    def register(self, canonicals: list[Mapping]) -> None:
        """Registry rows for conditions that may not have one yet, in key
        order, as every path registers them."""
        rows = sorted(map(registry_row, canonicals), key=lambda row: row["condition_id"])
        _insert_rows(Condition, rows, ["condition_id"])

    def evaluations(self, symbol: str, timeframe: str, bars: EvaluatedBars) -> None:
        """Write the pair's cache row of each bar and the triggers of the
        conditions that held.
        RegistryMoved when a condition has no registry row."""
        if not bars.ids:
            return
        known = set(Condition.objects.filter(pk__in=bars.ids).values_list("pk", flat=True))
        if missing := set(bars.ids) - known:
            raise RegistryMoved(missing)
        width = len(bars.ids)
        rows = [
            {
                "symbol": symbol,
                "timeframe": timeframe,
                "candle_time": candle_time,
                "indicator_values": {
                    cid: {**bars.values_at(row), "fired": bool(bars.fired[row])}
                    for row, cid in enumerate(bars.ids, start=bar * width)
                },
                "evaluated_at": self.now,
            }
            for bar, candle_time in enumerate(bars.times)
        ]
        _insert_rows(BarEvaluation, rows, ["symbol", "timeframe", "candle_time"])
        self._condition_triggers(
            [
                {
                    "condition_id": bars.ids[row % width],
                    "symbol": symbol,
                    "timeframe": timeframe,
                    "candle_time": bars.times[row // width],
                    "triggered_at": self.now,
                    "trigger_value": bars.values_at(row),
                    "processed": False,
                }
                for row in np.flatnonzero(bars.fired).tolist()
            ]
        )

    def _condition_triggers(self, triggers: list[dict]) -> None:
        """The condition triggers not written yet, with their subscriber
        counts, the registry's trigger counters, and an outbox row for each new
        trigger of a condition with subscriptions."""
        if not triggers:
            return
        counts = subscriber_counts({row["condition_id"] for row in triggers})
        for row in triggers:
            row["subscribers_count"] = sum(counts[row["condition_id"]])
        inserted = _insert_rows(
            ConditionTrigger, triggers, ["condition", "candle_time"], returning=("id", "condition")
        )
        # A catch-up inserts several triggers of one condition at once: one
        # update per distinct number of new triggers, not one per condition.
        by_count: dict[int, list[str]] = {}
        for cid, count in Counter(cid for _, cid in inserted).items():
            by_count.setdefault(count, []).append(cid)
        for count, cids in by_count.items():
            Condition.objects.filter(pk__in=cids).update(
                last_triggered_at=self.now, trigger_count=F("trigger_count") + count
            )
        self.written.condition_triggers = len(inserted)
        self.written.outbox_ids += self._outbox(
            [
                ("condition_trigger", f"condition_trigger:{tid}", {"condition_trigger_id": tid})
                for tid, cid in inserted
                if counts[cid][0] > 0
            ]
        )

    def alert_triggers(self, firings: AlertFirings) -> None:
        """The alert triggers not written yet, each alert's last fired bar,
        `once` alerts moved to triggered, and an outbox row per new trigger;
        for alerts still active only (`Written.inactive_alerts` counts the others)."""
        if not firings.rows:
            return
        active = set(
            Alert.objects.filter(pk__in=firings.last_fired, status=Alert.Status.ACTIVE).values_list(
                "pk", flat=True
            )
        )
        self.written.inactive_alerts = len(firings.last_fired) - len(active)
        rows = [row for row in firings.rows if row["alert_id"] in active]
        inserted = _insert_rows(
            AlertTrigger, rows, ["alert", "bar_open_time"], returning=("id", "alert")
        )
        # One update per bar fired at (usually one), not one per alert.
        by_bar: dict[datetime, list[int]] = {}
        for alert_id, bar in firings.last_fired.items():
            if alert_id in active:
                by_bar.setdefault(bar, []).append(alert_id)
        for bar, alert_ids in by_bar.items():
            Alert.objects.filter(pk__in=alert_ids).update(last_fired_bar=bar)
        if once := [alert_id for alert_id in firings.once if alert_id in active]:
            Alert.objects.filter(pk__in=once).update(
                status=Alert.Status.TRIGGERED, updated_at=self.now
            )
        self.written.alert_triggers = len(inserted)
        self.written.outbox_ids += self._outbox(
            [
                ("alert_trigger", f"alert_trigger:{tid}", {"alert_trigger_id": tid})
                for tid, _ in inserted
            ]
        )

    def cursor(self, symbol: str, timeframe: str, last_bar: datetime) -> None:
        """The pair's evaluation cursor moved to `last_bar`."""
        EvaluationCursor.objects.bulk_create(
            [EvaluationCursor(symbol=symbol, timeframe=timeframe, last_bar=last_bar)],
            update_conflicts=True,
            unique_fields=["symbol", "timeframe"],
            update_fields=["last_bar", "updated_at"],
        )

    def finish(self) -> Written:
        return self.written

    def _outbox(self, messages: list[tuple[str, str, dict]]) -> list[int]:
        """Outbox rows for (topic, key, payload) messages; the new rows' ids."""
        rows = [
            {
                "topic": topic,
                "key": key,
                "payload": payload,
                "created_at": self.now,
                "attempts": 0,
                "last_error": "",
            }
            for topic, key, payload in messages
        ]
        return [row_id for (row_id,) in _insert_rows(OutboxMessage, rows, ["key"], ("id",))]


def _insert_rows(
    model, rows: list[dict], conflict: list[str], returning: tuple[str, ...] = ()
) -> list[tuple]:
    if not rows:
        return []
    return insert_new(model, rows, conflict, returning or conflict[:1], 1000)


class PostgresWrites(PairWrites):
    """The same writes as statements queued in the connection's pipeline;
    `finish` reads their answers, all sent back together."""

    def __init__(self, now: datetime, checked: int | None) -> None:
        super().__init__(now)
        self.checked = checked
        self._evaluations: tuple[psycopg.Cursor, list[str]] | None = None
        self._alert_triggers: list[psycopg.Cursor] = []

    def evaluations(self, symbol: str, timeframe: str, bars: EvaluatedBars) -> None:
        count = len(bars.ids) * len(bars.times)
        candle_us = np.repeat(np.array([_pg_microseconds(t) for t in bars.times]), len(bars.ids))
        cursor = self._execute(
            _STORE_EVALUATIONS,
            {
                "now": self.now,
                "checked": self.checked,
                "symbol": symbol,
                "timeframe": timeframe,
                "row_ids": TextArray.of(bars.ids * len(bars.times)),
                "candle_times": TimestamptzArray.of(candle_us, count),
                "lefts": Float8Array.of(bars.left, count),
                "rights": Float8Array.of(bars.right, count),
                "lowers": Float8Array.of(bars.lower, count),
                "uppers": Float8Array.of(bars.upper, count),
                "kinds": Int2Array.of(bars.shapes, count),
                "fired": BoolArray.of(bars.fired, count),
            },
        )
        self._evaluations = (cursor, bars.ids)

    def alert_triggers(self, firings: AlertFirings) -> None:
        if not firings.rows:
            return
        once = set(firings.once)
        fired = len(firings.rows)
        alerts = len(firings.last_fired)
        cursor = self._execute(
            _STORE_ALERT_TRIGGERS,
            {
                "now": self.now,
                "alert_ids": Int8Array.of([row["alert_id"] for row in firings.rows], fired),
                "bars": TimestamptzArray.of(
                    [_pg_microseconds(row["bar_open_time"]) for row in firings.rows], fired
                ),
                # One JSON array, its elements in the order of the rows.
                "snapshots": json.dumps([row["snapshot"] for row in firings.rows]),
                "active": Alert.Status.ACTIVE,
                "triggered": Alert.Status.TRIGGERED,
                "fired_ids": Int8Array.of(list(firings.last_fired), alerts),
                "last_bars": TimestamptzArray.of(
                    [_pg_microseconds(bar) for bar in firings.last_fired.values()], alerts
                ),
                "once": BoolArray.of([alert_id in once for alert_id in firings.last_fired], alerts),
            },
        )
        self._alert_triggers.append(cursor)

    def cursor(self, symbol: str, timeframe: str, last_bar: datetime) -> None:
        self._execute(_MOVE_CURSOR, [symbol, timeframe, last_bar, self.now])

    def finish(self) -> Written:
        if self._evaluations is not None:
            cursor, ids = self._evaluations
            generation, registered, triggers, outbox_ids = cursor.fetchone()
            if generation != self.checked:
                if registered != len(ids):
                    present = {cid for (cid,) in self._execute(_PRESENT, [ids]).fetchall()}
                    raise RegistryMoved(set(ids) - present)
                self.written.generation = generation
            self.written.condition_triggers = triggers
            self.written.outbox_ids += outbox_ids
        for cursor in self._alert_triggers:
            count, inactive, outbox_ids = cursor.fetchone()
            self.written.alert_triggers = count
            self.written.inactive_alerts = inactive
            self.written.outbox_ids += outbox_ids
        return self.written

    def _execute(self, sql: str, params: list | dict) -> psycopg.Cursor:
        """A statement queued in the pipeline."""
        cursor = binary_cursor()
        cursor.execute(sql, params)
        return cursor


def binary_cursor() -> psycopg.Cursor:
    """A cursor of the connection (and transaction) Django holds (opened by
    `pipeline`) that sends its parameters apart from the statement,
    binary where asked (%b), and knows the arrays built here: Django's own
    cursor renders every value into the SQL text, which costs more than the
    statement for the thousands of values a pair's evaluation sends."""
    raw = connection.connection
    if raw not in _knows_arrays:
        # On the connection, once: registered on each cursor, they would copy
        # its adapters and make every later lookup slow.
        for array_type in (
            TextArray,
            TimestamptzArray,
            Float8Array,
            Int8Array,
            Int2Array,
            BoolArray,
        ):
            raw.adapters.register_dumper(array_type, _BinaryArrayDumper)
        _knows_arrays.add(raw)
    return psycopg.Cursor(raw)


_knows_arrays: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


# PostgreSQL's binary array format: a header, then each element as its
# length (-1 for NULL, never sent here) and its bytes, big-endian.
_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has nulls, element type, length, lower bound
_EPOCH_2000_US = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


def _pg_microseconds(moment: datetime) -> int:
    """A timestamptz as PostgreSQL stores it: microseconds since 2000-01-01 UTC."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond - _EPOCH_2000_US


class _BinaryArray(bytes):
    """A one-dimensional PostgreSQL array, already in its binary format."""

    oid = 0  # the array type
    element_oid = 0
    element_dtype = ""

    @classmethod
    def of(cls, values: np.ndarray, count: int) -> _BinaryArray:
        dtype = np.dtype(cls.element_dtype)
        body = np.empty(count, dtype=[("size", ">i4"), ("value", dtype)])
        body["size"] = dtype.itemsize
        body["value"] = values
        return cls(_ARRAY_HEADER.pack(1, 0, cls.element_oid, count, 1) + body.tobytes())


class Float8Array(_BinaryArray):
    oid, element_oid, element_dtype = 1022, 701, ">f8"


class Int8Array(_BinaryArray):
    oid, element_oid, element_dtype = 1016, 20, ">i8"


class Int2Array(_BinaryArray):
    oid, element_oid, element_dtype = 1005, 21, ">i2"


class BoolArray(_BinaryArray):
    oid, element_oid, element_dtype = 1000, 16, "?"


class TimestamptzArray(_BinaryArray):
    oid, element_oid, element_dtype = 1185, 1184, ">i8"


class TextArray(_BinaryArray):
    oid, element_oid = 1009, 25

    @classmethod
    def of(cls, values: list[str], count: int | None = None) -> TextArray:  # type: ignore[override]
        encoded = [value.encode() for value in values]
        sizes = struct.pack(f">{len(encoded)}i", *map(len, encoded))
        parts = [sizes[4 * i : 4 * i + 4] + value for i, value in enumerate(encoded)]
        header = _ARRAY_HEADER.pack(1, 0, cls.element_oid, len(encoded), 1)
        return cls(header + b"".join(parts))


class _BinaryArrayDumper(Dumper):
    format = Format.BINARY

    def __init__(self, cls: type, context=None) -> None:
        super().__init__(cls, context)
        self.oid = cls.oid

    def dump(self, obj: bytes) -> bytes:
        return obj


# What a pair's evaluation writes to the registry side, under its symbol's
# lock (`_LOCK_SYMBOL`), in one statement. Its input, a row per condition and
# bar, each condition's values' JSON built by the database from one array per
# value (NaN is a missing value; `kind` says whether the right side is absent,
# a value, or a channel); a trigger's value is the same without `fired`. The triggers of
# the conditions that held, with their subscribers counted (active
# subscriptions, and active alerts, whose links say so: alerts migration
# 0002), for registered conditions only; the trigger counters of their
# registry rows (no other registry row is written). The pair's cache row of
# each bar, every condition's values keyed by its id; an outbox
# row for each new trigger of a condition with subscriptions. Then the
# symbol's registry generation and, only when it is not the one the caller
# checked at, how many of the conditions have a registry row (their ids are
# sent once, as the rows' ids: a catch-up's repeats of them count no row twice).
_STORE_EVALUATIONS = """
WITH evaluated AS (
    SELECT v.id, v.candle_time, v.fired, jsonb_build_object(
        'left', NULLIF(v.lhs, 'NaN'),
        'right', CASE v.kind
            WHEN 1 THEN to_jsonb(NULLIF(v.rhs, 'NaN'))
            WHEN 2 THEN jsonb_build_object('lower', NULLIF(v.lower, 'NaN'),
                                           'upper', NULLIF(v.upper, 'NaN'))
        END,
        'fired', v.fired) AS cached
    FROM unnest(%(row_ids)b::varchar[], %(candle_times)b::timestamptz[],
                %(lefts)b::float8[], %(rights)b::float8[], %(lowers)b::float8[],
                %(uppers)b::float8[], %(kinds)b::int2[], %(fired)b::bool[])
        AS v(id, candle_time, lhs, rhs, lower, upper, kind, fired)
), triggered AS (
    INSERT INTO condition_triggers (condition_id, symbol, timeframe, candle_time, triggered_at,
                                    trigger_value, processed, subscribers_count)
    SELECT e.id, %(symbol)s, %(timeframe)s, e.candle_time, %(now)s, e.cached - 'fired', false,
        (SELECT count(*) FROM user_condition_subscriptions s
         WHERE s.condition_id = e.id AND s.active)
        + (SELECT count(*) FROM alerts_alert_conditions c WHERE c.condition_id = e.id AND c.active)
    FROM evaluated e
    WHERE e.fired AND EXISTS (SELECT FROM condition_registry r WHERE r.condition_id = e.id)
    ON CONFLICT (condition_id, candle_time) DO NOTHING
    RETURNING id, condition_id
), trigger_counters AS (
    UPDATE condition_registry r
    SET trigger_count = r.trigger_count + n.triggers, last_triggered_at = %(now)s
    FROM (SELECT condition_id, count(*) AS triggers FROM triggered GROUP BY condition_id) n
    WHERE r.condition_id = n.condition_id
), stored AS (
    INSERT INTO condition_evaluation_cache
        (symbol, timeframe, candle_time, indicator_values, evaluated_at)
    SELECT %(symbol)s, %(timeframe)s, candle_time, jsonb_object_agg(id, cached), %(now)s
    FROM evaluated
    GROUP BY candle_time
    ON CONFLICT (symbol, timeframe, candle_time) DO NOTHING
), queued AS (
    INSERT INTO alerts_outboxmessage (topic, key, payload, created_at, attempts, last_error)
    SELECT 'condition_trigger', 'condition_trigger:' || t.id,
        jsonb_build_object('condition_trigger_id', t.id), %(now)s, 0, ''
    FROM triggered t
    WHERE EXISTS (SELECT 1 FROM user_condition_subscriptions s
                  WHERE s.condition_id = t.condition_id AND s.active)
    ON CONFLICT (key) DO NOTHING
    RETURNING id
), generation AS (
    SELECT generation FROM condition_registry_generations WHERE symbol = %(symbol)s
)
SELECT (SELECT generation FROM generation),
    (SELECT count(*) FROM condition_registry r WHERE r.condition_id = ANY(%(row_ids)b::varchar[])
        AND (SELECT generation FROM generation) IS DISTINCT FROM %(checked)s::bigint),
    (SELECT count(*) FROM triggered),
    ARRAY(SELECT id FROM queued ORDER BY id)
"""

_PRESENT = "SELECT condition_id FROM condition_registry WHERE condition_id = ANY(%s)"

# Alert triggers, last fired bars, `once` transitions and outbox rows in one,
# for the alerts still active: a worker's copy of a pair's alerts can be
# older than a `once` alert's firing or an expiry (alerts migration 0005), and
# the database, not that copy, decides. Then how many alerts were not active.
_STORE_ALERT_TRIGGERS = """
WITH active AS (
    SELECT a.id FROM alerts_alert a
    WHERE a.id = ANY(%(fired_ids)b::bigint[]) AND a.status = %(active)s
), inserted AS (
    INSERT INTO alerts_alerttrigger (alert_id, bar_open_time, fired_at, snapshot)
    SELECT v.alert_id, v.bar_open_time, %(now)s, v.snapshot
    FROM ROWS FROM (unnest(%(alert_ids)b::bigint[]), unnest(%(bars)b::timestamptz[]),
                    jsonb_array_elements(%(snapshots)s::jsonb))
        AS v(alert_id, bar_open_time, snapshot)
    WHERE v.alert_id IN (SELECT id FROM active)
    ON CONFLICT (alert_id, bar_open_time) DO NOTHING
    RETURNING id
), fired AS (
    UPDATE alerts_alert a
    SET last_fired_bar = f.bar_open_time,
        status = CASE WHEN f.once AND a.status = %(active)s THEN %(triggered)s ELSE a.status END,
        updated_at = CASE WHEN f.once AND a.status = %(active)s THEN %(now)s ELSE a.updated_at END
    FROM unnest(%(fired_ids)b::bigint[], %(last_bars)b::timestamptz[], %(once)b::bool[])
        AS f(id, bar_open_time, once)
    WHERE a.id = f.id AND a.id IN (SELECT id FROM active)
), queued AS (
    INSERT INTO alerts_outboxmessage (topic, key, payload, created_at, attempts, last_error)
    SELECT 'alert_trigger', 'alert_trigger:' || id, jsonb_build_object('alert_trigger_id', id),
        %(now)s, 0, ''
    FROM inserted
    ON CONFLICT (key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM inserted),
    cardinality(%(fired_ids)b::bigint[]) - (SELECT count(*) FROM active),
    ARRAY(SELECT id FROM queued ORDER BY id)
"""

_MOVE_CURSOR = """
INSERT INTO evaluation_cursors (symbol, timeframe, last_bar, updated_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (symbol, timeframe)
DO UPDATE SET last_bar = EXCLUDED.last_bar, updated_at = EXCLUDED.updated_at
"""
