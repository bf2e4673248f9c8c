"""evaluate_symbol: one (symbol, timeframe) pair at its newly closed bars.

Klines once, the engine's plan once for every condition on the pair (registry
conditions of bots and the conditions of every active alert), then one
transaction with everything the bar produced: condition triggers, alert
triggers (unique per alert and bar: the database is the debounce), status
changes, and outbox rows. Dispatch is queued only after that commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import pandas as pd
import psycopg
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import F, JSONField, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import MD5, Cast
from django.utils import timezone

from conditions.bulk import insert_new
from conditions.engine.errors import ConditionError
from conditions.engine.live import PairEvaluation, PairEvaluator
from conditions.engine.normalize import condition_id as make_condition_id
from conditions.engine.normalize import normalize_condition
from conditions.engine.plan import EvaluationPlan, PlanResult
from conditions.engine.playbook import NormalizedAlert, alert_signal, normalize_alert, should_fire
from conditions.marketdata.binance import BinanceSource
from conditions.marketdata.cache import KlineCache
from conditions.metrics import record_evaluation
from conditions.models import (
    Condition,
    ConditionEvaluation,
    ConditionSubscription,
    ConditionTrigger,
    EvaluationCursor,
)
from conditions.services import register_canonical, subscriber_counts

from .models import Alert, AlertTrigger, OutboxMessage

logger = logging.getLogger(__name__)

HISTORY_BARS = 1000
# After a stall, bars closed since the last evaluation are caught up, but only
# this many: a trader wants a late alert, not one from yesterday.
MAX_CATCHUP_BARS = 12


@lru_cache(maxsize=1)
def market() -> KlineCache:
    """The process's market data: Binance (or the stub) behind the shared kline cache."""
    return KlineCache(
        BinanceSource(backoff_cache=caches["default"]), key_prefix=settings.KLINE_CACHE_PREFIX
    )


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class EvaluationReport:
    symbol: str
    timeframe: str
    bars: list[int] = field(default_factory=list)
    conditions: int = 0
    indicator_computations: int = 0
    condition_triggers: int = 0
    alert_triggers: int = 0
    skipped_alerts: list[int] = field(default_factory=list)
    expired_alerts: int = 0
    outbox_ids: list[int] = field(default_factory=list)
    duration_ms: float = 0.0
    # Where duration_ms went: candles, indicators, conditions, playbooks,
    # and database (the queries, the writes and everything else).
    phases_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _AlertRow:
    """What evaluation needs of an alert's row besides its playbook."""

    pk: int
    fire_mode: str
    last_fired_bar: datetime | None


@dataclass(frozen=True)
class _Remembered:
    """An alert's playbook and what it was made from: its fire mode with the
    row version last seen, and with the digest of the stored content (as
    alerts.services.normalized_alert keys it, here on the database's own text
    of it: no parsing per bar). The content keys the alert in its pair's batch."""

    seen: tuple[str, str]
    content: tuple[str, bytes]
    playbook: NormalizedAlert


# What a worker process keeps between evaluations, only ever as a cache: per
# pair, its compiled plan and alert batch; per alert, its playbook.
_evaluators: dict[tuple[str, str, bool], PairEvaluator] = {}
_playbooks: dict[int, _Remembered] = {}


def evaluate_symbol(
    symbol: str,
    timeframe: str,
    *,
    now_ms: int | None = None,
    forming: bool = False,
    source: KlineCache | None = None,
    dispatch: bool = True,
) -> EvaluationReport:
    """Evaluate the pair's closed bars not evaluated yet (or, with `forming`,
    the per_bar alerts on the bar still forming). Without `dispatch`, the
    outbox rows are written but not queued: the sweeper sends them."""
    started = time.perf_counter()
    source = source or market()
    report = EvaluationReport(symbol, timeframe)
    now_ms = int(now_ms if now_ms is not None else source.source.server_time_ms())
    now = timezone.now()

    playbooks = _active_playbooks(symbol, timeframe, forming, now, report)

    canonicals = {} if forming else _subscribed_conditions(symbol, timeframe)
    for _, playbook in playbooks.values():
        for step in playbook.steps:
            canonicals.setdefault(step.condition_id, step.canonical)
    if not canonicals and (forming or not _trailing_deals(symbol, timeframe).exists()):
        return report

    fetching = time.perf_counter()
    timeframes = {timeframe} | {c["timeframe"] for c in canonicals.values()}
    candles = {tf: source.closed_candles(symbol, tf, now_ms, HISTORY_BARS) for tf in timeframes}
    if forming:
        forming_row = source.forming_candle(symbol, timeframe)
        if forming_row is None or forming_row.empty:
            return report
        candles[timeframe] = pd.concat([candles[timeframe], forming_row], ignore_index=True)
    base_open = candles[timeframe]["open_time"].to_numpy(dtype=np.int64)
    if len(base_open) == 0:
        return report
    candles_s = time.perf_counter() - fetching

    bars = _bars_to_evaluate(symbol, timeframe, base_open, forming)
    evaluation = _evaluate_pair(
        symbol, timeframe, forming, canonicals, playbooks, candles, bars, report
    )
    result = evaluation.result
    report.bars = [int(base_open[i]) for i in bars]
    report.conditions = len(result.series)
    report.indicator_computations = result.stats.indicator_computations

    with transaction.atomic():
        if not forming:
            _record_conditions(symbol, timeframe, canonicals, evaluation, bars, now, report)
        deciding_s = _fire_alerts(
            playbooks, evaluation, candles[timeframe], bars, forming, now, report
        )
        if not forming and bars:
            EvaluationCursor.objects.bulk_create(
                [
                    EvaluationCursor(
                        symbol=symbol,
                        timeframe=timeframe,
                        last_bar=ms_to_datetime(int(base_open[bars[-1]])),
                    )
                ],
                update_conflicts=True,
                unique_fields=["symbol", "timeframe"],
                update_fields=["last_bar", "updated_at"],
            )
        if report.outbox_ids and dispatch:
            from .dispatch import send_outbox

            ids = list(report.outbox_ids)
            transaction.on_commit(lambda: send_outbox(ids))
    if not forming and bars:
        _hand_bars_to_trailing_deals(symbol, timeframe, candles[timeframe], bars)
    report.duration_ms = (time.perf_counter() - started) * 1000
    stats = result.stats
    engine_ms = {
        "candles": candles_s * 1000,
        "indicators": stats.indicator_seconds * 1000,
        "conditions": stats.condition_seconds * 1000,
        "playbooks": (evaluation.playbook_seconds + deciding_s) * 1000,
    }
    report.phases_ms = {**engine_ms, "database": report.duration_ms - sum(engine_ms.values())}
    record_evaluation(symbol, timeframe, report)
    return report


def _active_playbooks(
    symbol: str, timeframe: str, forming: bool, now: datetime, report: EvaluationReport
) -> dict[int, tuple[_AlertRow, NormalizedAlert]]:
    """The pair's active alerts (per_bar ones only, with `forming`) and their
    playbooks; those past their deadline are moved to expired instead.

    An alert is parsed only when its stored content differs from what its
    remembered playbook was made from. The database sends each alert's row
    version, and the content only of the alerts whose version is not the one
    remembered; a new version with the same content (the row was updated for
    last_fired_bar) keeps its playbook. An alert that cannot be evaluated is
    skipped and reported."""
    rows = (
        Alert.objects.filter(symbol=symbol, base_timeframe=timeframe, status=Alert.Status.ACTIVE)
        .annotate(version=_row_version())
        .values_list("pk", "fire_mode", "last_fired_bar", "expires_at", "version")
    )
    live, expired = [], []
    for row in rows:
        # expires_at is the user's deadline on the wall clock, as the API
        # checks it; the exchange's clock decides bars, not deadlines.
        if row[3] is not None and row[3] <= now:
            expired.append(row[0])
        elif not forming or row[1] == Alert.FireMode.PER_BAR:
            live.append(row)
    if expired:
        report.expired_alerts = Alert.objects.filter(
            pk__in=expired, status=Alert.Status.ACTIVE
        ).update(status=Alert.Status.EXPIRED, updated_at=now)

    unknown = {
        pk
        for pk, fire_mode, _, _, version in live
        if (remembered := _playbooks.get(pk)) is None or remembered.seen != (fire_mode, version)
    }
    stored = {}
    if unknown:
        stored = dict(
            Alert.objects.filter(pk__in=unknown)
            .annotate(stored_config=Cast("condition_config", TextField()))
            .values_list("pk", "stored_config")
        )
    playbooks = {}
    for pk, fire_mode, last_fired_bar, _, version in live:
        if pk in unknown:
            if pk not in stored:
                continue  # deleted since the first query
            content = hashlib.md5(stored[pk].encode(), usedforsecurity=False).digest()
            remembered = _playbooks.get(pk)
            if remembered and remembered.content == (fire_mode, content):
                _playbooks[pk] = replace(remembered, seen=(fire_mode, version))
            else:
                # What alert_input gives normalized_alert, without building a model.
                raw = {
                    "symbol": symbol,
                    "base_timeframe": timeframe,
                    "conditionConfig": json.loads(stored[pk]),
                    "fireMode": fire_mode,
                }
                try:
                    playbook = normalize_alert(raw)
                except ConditionError as exc:
                    logger.error("alert %s on %s %s skipped: %s", pk, symbol, timeframe, exc)
                    report.skipped_alerts.append(pk)
                    continue
                _playbooks[pk] = _Remembered((fire_mode, version), (fire_mode, content), playbook)
        playbooks[pk] = (_AlertRow(pk, fire_mode, last_fired_bar), _playbooks[pk].playbook)
    return playbooks


def _row_version():
    """What changes whenever an alert's row does, by whatever path (the API,
    an operator's SQL, a migration). On PostgreSQL the row's xmin, free to
    read; elsewhere a digest of the content."""
    if connection.vendor == "postgresql":
        # Only the model's own table name is interpolated.
        return RawSQL(f'"{Alert._meta.db_table}".xmin::text', ())  # noqa: S611
    return MD5(Cast("condition_config", TextField()))


def _trailing_deals(symbol: str, timeframe: str):
    """Open deals on the pair whose take profit trails: they need every closed bar."""
    from bots.models import Deal

    return Deal.objects.filter(
        state=Deal.State.OPEN, bot__symbol=symbol, bot__base_timeframe=timeframe
    ).exclude(bot__settings__trailing_deviation=None)


def _hand_bars_to_trailing_deals(
    symbol: str, timeframe: str, base: pd.DataFrame, bars: list[int]
) -> None:
    if not _trailing_deals(symbol, timeframe).exists():
        return
    from bots.tasks import trail_deals

    rows = base.iloc[bars]
    payload = [
        [int(o), repr(float(h)), repr(float(c))]
        for o, h, c in zip(rows["open_time"], rows["high"], rows["close"], strict=True)
    ]
    trail_deals.delay(symbol, timeframe, payload)


def _subscribed_conditions(symbol: str, timeframe: str) -> dict[str, dict]:
    """Registry conditions on the pair with at least one active bot; a row whose
    stored form no longer normalizes to itself is skipped, never evaluated."""
    ids = (
        ConditionSubscription.objects.filter(
            active=True, condition__symbol=symbol, condition__timeframe=timeframe
        )
        .values_list("condition_id", flat=True)
        .distinct()
    )
    canonicals = {}
    for condition in Condition.objects.filter(pk__in=ids):
        try:
            canonical = normalize_condition(condition.indicator_config)
            if make_condition_id(canonical) != condition.condition_id:
                raise ConditionError("indicator_config", "does not match its condition_id")
        except ConditionError as exc:
            logger.error("registry condition %s skipped: %s", condition.condition_id, exc)
            continue
        canonicals[condition.condition_id] = canonical
    return canonicals


def _evaluate_pair(
    symbol: str,
    timeframe: str,
    forming: bool,
    canonicals: dict,
    playbooks: dict,
    candles: dict,
    bars: list[int],
    report: EvaluationReport,
) -> PairEvaluation:
    """One plan for the whole pair, kept by the process from one bar to the
    next. Should it fail, each alert gets its own plan so that one bad alert
    cannot stop the others on its symbol."""
    key = (symbol, timeframe, forming)
    alerts = [((pk, _playbooks[pk].content), playbook) for pk, (_, playbook) in playbooks.items()]
    try:
        evaluator = _evaluators.setdefault(key, PairEvaluator())
        return evaluator.evaluate(canonicals, alerts, candles, timeframe, len(bars))
    except Exception:
        _evaluators.pop(key, None)
        logger.exception(
            "shared plan failed on %s %s; evaluating alerts one by one", symbol, timeframe
        )
    series: dict = {}
    holds, kept = [], []
    base_open = candles[timeframe]["open_time"].to_numpy(dtype=np.int64)
    indicator_computations = 0
    for alert_id, (_row, playbook) in list(playbooks.items()):
        try:
            part = EvaluationPlan(step.canonical for step in playbook.steps).run(candles, timeframe)
            signal = alert_signal(playbook, {cid: s.fired for cid, s in part.series.items()})
        except Exception:
            logger.exception("alert %s skipped: its conditions cannot be evaluated", alert_id)
            report.skipped_alerts.append(alert_id)
            del playbooks[alert_id]
            continue
        series.update(part.series.items())
        indicator_computations += part.stats.indicator_computations
        holds.append(signal[len(signal) - len(bars) :])
        kept.append((alert_id, _playbooks[alert_id].content))
    result = PlanResult(base_open_time=base_open, series=series)
    result.stats.indicator_computations = indicator_computations
    matrix = np.array(holds, dtype=bool).reshape(len(holds), len(bars))
    return PairEvaluation(result, kept, matrix, playbook_seconds=0.0)


def _bars_to_evaluate(
    symbol: str, timeframe: str, base_open: np.ndarray, forming: bool
) -> list[int]:
    last = len(base_open) - 1
    if forming:
        return [last]
    evaluated = (
        EvaluationCursor.objects.filter(symbol=symbol, timeframe=timeframe)
        .values_list("last_bar", flat=True)
        .first()
    )
    if evaluated is None:
        return [last]
    first = int(np.searchsorted(base_open, int(evaluated.timestamp() * 1000), side="right"))
    return list(range(max(first, last - MAX_CATCHUP_BARS + 1), last + 1))


def _record_conditions(
    symbol: str,
    timeframe: str,
    canonicals: dict,
    evaluation: PairEvaluation,
    bars: list[int],
    now: datetime,
    report: EvaluationReport,
) -> None:
    if not bars:
        return
    result = evaluation.result
    all_series = list(result.series.items())
    evaluated = [cid for cid, _ in all_series]
    indexes = [evaluation.series_index(position) for position in range(len(bars))]
    times = [ms_to_datetime(int(result.base_open_time[index])) for index in indexes]
    # The cache rows' foreign key is checked at commit, after the
    # registration of any condition the registry lacks, below.
    write = _store_evaluations if connection.vendor == "postgresql" else _write_evaluations
    known = write(symbol, timeframe, all_series, indexes, times, now)
    unknown = canonicals.keys() - known
    if unknown:
        for cid in unknown:
            register_canonical(canonicals[cid])
        _count_evaluations([cid for cid in evaluated if cid in unknown], len(bars), now)

    triggers = [
        {
            "condition_id": cid,
            "symbol": symbol,
            "timeframe": timeframe,
            "candle_time": candle_time,
            "triggered_at": now,
            "trigger_value": series.values_at(index),
            "processed": False,
        }
        for index, candle_time in zip(indexes, times, strict=True)
        for cid, series in all_series
        if series.fired[index]
    ]
    if not triggers:
        return
    insert = _store_triggers if connection.vendor == "postgresql" else _insert_triggers
    report.condition_triggers, outbox_ids = insert(triggers, now)
    report.outbox_ids.extend(outbox_ids)


def _insert_triggers(triggers: list[dict], now: datetime) -> tuple[int, list[int]]:
    """Write the condition triggers not written yet, with their subscriber
    counts, the registry's trigger counters, and an outbox row for each new
    trigger of a condition with subscriptions: how many triggers are new,
    and the outbox rows' ids."""
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
            last_triggered_at=now, trigger_count=F("trigger_count") + count
        )
    outbox_ids = _add_outbox(
        [
            ("condition_trigger", f"condition_trigger:{tid}", {"condition_trigger_id": tid})
            for tid, cid in inserted
            if counts[cid][0] > 0
        ],
        now,
    )
    return len(inserted), outbox_ids


# _insert_triggers in one statement: the database counts each condition's
# subscribers (active subscriptions plus active alerts) as it inserts.
_STORE_TRIGGERS = """
WITH inserted AS (
    INSERT INTO condition_triggers (condition_id, symbol, timeframe, candle_time, triggered_at,
                                    trigger_value, processed, subscribers_count)
    SELECT v.id, v.symbol, v.timeframe, v.candle_time, %s, v.trigger_value, false,
        (SELECT count(*) FROM user_condition_subscriptions s
         WHERE s.condition_id = v.id AND s.active)
        + (SELECT count(*) FROM alerts_alert_conditions c JOIN alerts_alert a ON a.id = c.alert_id
           WHERE c.condition_id = v.id AND a.status = %s)
    FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::timestamptz[], %b::jsonb[])
        AS v(id, symbol, timeframe, candle_time, trigger_value)
    ON CONFLICT (condition_id, candle_time) DO NOTHING
    RETURNING id, condition_id
), counted AS (
    UPDATE condition_registry r
    SET last_triggered_at = %s, trigger_count = r.trigger_count + n.triggers
    FROM (SELECT condition_id, count(*) AS triggers FROM inserted GROUP BY condition_id) n
    WHERE r.condition_id = n.condition_id
), queued AS (
    INSERT INTO alerts_outboxmessage (topic, key, payload, created_at, attempts, last_error)
    SELECT 'condition_trigger', 'condition_trigger:' || i.id,
        jsonb_build_object('condition_trigger_id', i.id), %s, 0, ''
    FROM inserted i
    WHERE EXISTS (SELECT 1 FROM user_condition_subscriptions s
                  WHERE s.condition_id = i.condition_id AND s.active)
    ON CONFLICT (key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM inserted), ARRAY(SELECT id FROM queued ORDER BY id)
"""


def _store_triggers(triggers: list[dict], now: datetime) -> tuple[int, list[int]]:
    """_insert_triggers on PostgreSQL, in one round trip."""
    columns = [
        [row[name] for row in triggers]
        for name in ("condition_id", "symbol", "timeframe", "candle_time")
    ]
    values = [json.dumps(row["trigger_value"]) for row in triggers]
    with _binary_cursor() as cursor:
        cursor.execute(_STORE_TRIGGERS, [now, Alert.Status.ACTIVE, *columns, values, now, now])
        count, outbox_ids = cursor.fetchone()
        return count, outbox_ids


# One statement for what a pair's evaluation writes to the registry side:
# the counters of every condition evaluated, and its cache rows, their JSON
# built by the database from one array per value (NaN is a missing value;
# `kind` says whether the right side is absent, a value, or a channel).
_STORE_EVALUATIONS = """
WITH counted AS (
    UPDATE condition_registry
    SET last_evaluated_at = %s, evaluation_count = evaluation_count + %s
    WHERE condition_id = ANY(%b) RETURNING condition_id
), stored AS (
    INSERT INTO condition_evaluation_cache
        (condition_id, symbol, timeframe, candle_time, indicator_values, evaluated_at)
    SELECT v.id, %s, %s, v.candle_time, jsonb_build_object(
        'left', NULLIF(v.lhs, 'NaN'),
        'right', CASE v.kind
            WHEN 1 THEN to_jsonb(NULLIF(v.rhs, 'NaN'))
            WHEN 2 THEN jsonb_build_object('lower', NULLIF(v.lower, 'NaN'),
                                           'upper', NULLIF(v.upper, 'NaN'))
        END,
        'fired', v.fired), %s
    FROM unnest(%b::varchar[], %b::timestamptz[], %b::float8[], %b::float8[], %b::float8[],
                %b::float8[], %b::int2[], %b::bool[])
        AS v(id, candle_time, lhs, rhs, lower, upper, kind, fired)
    ON CONFLICT (condition_id, candle_time) DO NOTHING
)
SELECT condition_id FROM counted
"""


def _store_evaluations(
    symbol: str,
    timeframe: str,
    all_series: list,
    indexes: list[int],
    times: list[datetime],
    now: datetime,
) -> set[str]:
    """On PostgreSQL: count the evaluations and write the cache rows in one
    round trip; the ids of the conditions the registry holds."""
    nan = float("nan")
    columns: list[list] = [[] for _ in range(8)]
    ids, candle_times, lefts, rights, lowers, uppers, kinds, fired = columns
    for index, candle_time in zip(indexes, times, strict=True):
        for cid, series in all_series:
            ids.append(cid)
            candle_times.append(candle_time)
            lefts.append(float(series.left[index]))
            right = series.right
            if right is None:
                kinds.append(0)
                rights.append(nan)
                lowers.append(nan)
                uppers.append(nan)
            elif isinstance(right, tuple):
                kinds.append(2)
                rights.append(nan)
                lowers.append(float(right[0][index]))
                uppers.append(float(right[1][index]))
            else:
                kinds.append(1)
                rights.append(float(right[index]))
                lowers.append(nan)
                uppers.append(nan)
            fired.append(bool(series.fired[index]))
    with _binary_cursor() as cursor:
        cursor.execute(
            _STORE_EVALUATIONS,
            [now, len(indexes), [cid for cid, _ in all_series], symbol, timeframe, now, *columns],
        )
        return {cid for (cid,) in cursor.fetchall()}


def _insert_rows(
    model, rows: list[dict], conflict: list[str], returning: tuple[str, ...] = ()
) -> list[tuple]:
    """insert_new; on PostgreSQL, as one array per column in one statement,
    the cheapest way to send it the thousands of rows a cycle writes."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        return insert_new(model, rows, conflict, returning or conflict[:1], 1000)
    meta = model._meta
    fields = [meta.get_field(name) for name in rows[0]]
    arrays = []
    for name, model_field in zip(rows[0], fields, strict=True):
        values = [row[name] for row in rows]
        if isinstance(model_field, JSONField):
            values = [json.dumps(value) for value in values]
        arrays.append(values)
    columns = ", ".join(model_field.column for model_field in fields)
    casts = ", ".join(f"%b::{model_field.db_type(connection)}[]" for model_field in fields)
    keys = ", ".join(meta.get_field(name).column for name in conflict)
    back = ", ".join(meta.get_field(name).column for name in returning)
    # Only names from the model's metadata are interpolated; values are
    # parameters (%b: sent in binary).
    sql = (
        f"INSERT INTO {meta.db_table} ({columns}) SELECT * FROM unnest({casts}) "  # noqa: S608
        f"ON CONFLICT ({keys}) DO NOTHING" + (f" RETURNING {back}" if back else "")
    )
    with _binary_cursor() as cursor:
        cursor.execute(sql, arrays)
        return cursor.fetchall() if back else []


def _binary_cursor():
    """A cursor of the same connection (and transaction) that sends its
    parameters apart from the statement, in binary: Django's own renders
    every array element into the SQL text, which costs more than the
    statement for the tens of thousands of values a cycle writes."""
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _write_evaluations(
    symbol: str,
    timeframe: str,
    all_series: list,
    indexes: list[int],
    times: list[datetime],
    now: datetime,
) -> set[str]:
    """_store_evaluations through the ORM, for the other databases."""
    ids = [cid for cid, _ in all_series]
    known = set(Condition.objects.filter(pk__in=ids).values_list("pk", flat=True))
    _count_evaluations(known, len(indexes), now)
    rows = [
        {
            "condition_id": cid,
            "symbol": symbol,
            "timeframe": timeframe,
            "candle_time": candle_time,
            "indicator_values": {**series.values_at(index), "fired": bool(series.fired[index])},
            "evaluated_at": now,
        }
        for index, candle_time in zip(indexes, times, strict=True)
        for cid, series in all_series
    ]
    _insert_rows(ConditionEvaluation, rows, ["condition", "candle_time"])
    return known


def _count_evaluations(cids: Iterable[str], bars: int, now: datetime) -> None:
    """The registry's evaluation counters of `cids`, each evaluated at `bars` bars."""
    Condition.objects.filter(pk__in=cids).update(
        last_evaluated_at=now, evaluation_count=F("evaluation_count") + bars
    )


def _fire_alerts(
    playbooks: dict,
    evaluation: PairEvaluation,
    base: pd.DataFrame,
    bars: Iterable[int],
    forming: bool,
    now: datetime,
    report: EvaluationReport,
) -> float:
    """Write the triggers of the alerts that fire; the seconds spent deciding
    which do (the rest is writing)."""
    started = time.perf_counter()
    result = evaluation.result
    closes = base["close"].to_numpy()
    last_bar = len(base) - 1
    bars = list(bars)
    rows, once_alerts, fired_bars = [], [], {}
    # An alert that holds at none of the bars cannot fire at any of them.
    for position in np.flatnonzero(evaluation.holds.any(axis=1)):
        alert_id, _ = evaluation.alert_keys[position]
        alert, playbook = playbooks[alert_id]
        last_fired = int(alert.last_fired_bar.timestamp() * 1000) if alert.last_fired_bar else None
        for offset, bar in enumerate(bars):
            index = evaluation.series_index(offset)
            bar_open = int(result.base_open_time[index])
            closed = not (forming and bar == last_bar)
            if not should_fire(
                alert.fire_mode,
                holds=bool(evaluation.holds[position, offset]),
                bar_closed=closed,
                bar_open_ms=bar_open,
                last_fired_bar_ms=last_fired,
            ):
                continue
            snapshot = {
                "close": float(closes[bar]),
                "bar_closed": closed,
                "values": {
                    cid: result.series[cid].values_at(index) for cid in playbook.condition_ids
                },
            }
            rows.append(
                {
                    "alert_id": alert_id,
                    "bar_open_time": ms_to_datetime(bar_open),
                    "fired_at": now,
                    "snapshot": snapshot,
                }
            )
            last_fired = bar_open
            fired_bars[alert_id] = bar_open
            if alert.fire_mode == Alert.FireMode.ONCE:
                once_alerts.append(alert_id)
                break
    deciding_s = time.perf_counter() - started
    if rows:
        write = (
            _store_alert_triggers if connection.vendor == "postgresql" else _write_alert_triggers
        )
        report.alert_triggers, outbox_ids = write(rows, fired_bars, once_alerts, now)
        report.outbox_ids.extend(outbox_ids)
    return deciding_s


def _write_alert_triggers(
    rows: list[dict], fired_bars: dict[int, int], once_alerts: list[int], now: datetime
) -> tuple[int, list[int]]:
    """Write the alert triggers not written yet, each alert's last fired bar,
    `once` alerts moved to triggered, and an outbox row per new trigger: how
    many triggers are new, and the outbox rows' ids."""
    inserted = _insert_rows(
        AlertTrigger, rows, ["alert", "bar_open_time"], returning=("id", "alert")
    )
    # One update per bar fired at (usually one), not one per alert.
    by_bar: dict[int, list[int]] = {}
    for alert_id, bar_open in fired_bars.items():
        by_bar.setdefault(bar_open, []).append(alert_id)
    for bar_open, alert_ids in by_bar.items():
        Alert.objects.filter(pk__in=alert_ids).update(last_fired_bar=ms_to_datetime(bar_open))
    if once_alerts:
        Alert.objects.filter(pk__in=once_alerts, status=Alert.Status.ACTIVE).update(
            status=Alert.Status.TRIGGERED, updated_at=now
        )
    outbox_ids = _add_outbox(
        [
            ("alert_trigger", f"alert_trigger:{tid}", {"alert_trigger_id": tid})
            for tid, _ in inserted
        ],
        now,
    )
    return len(inserted), outbox_ids


# _write_alert_triggers in one statement.
_STORE_ALERT_TRIGGERS = """
WITH inserted AS (
    INSERT INTO alerts_alerttrigger (alert_id, bar_open_time, fired_at, snapshot)
    SELECT v.alert_id, v.bar_open_time, %s, v.snapshot
    FROM unnest(%b::bigint[], %b::timestamptz[], %b::jsonb[]) AS v(alert_id, bar_open_time, snapshot)
    ON CONFLICT (alert_id, bar_open_time) DO NOTHING
    RETURNING id
), fired AS (
    UPDATE alerts_alert a
    SET last_fired_bar = f.bar_open_time,
        status = CASE WHEN f.once AND a.status = %s THEN %s ELSE a.status END,
        updated_at = CASE WHEN f.once AND a.status = %s THEN %s ELSE a.updated_at END
    FROM unnest(%b::bigint[], %b::timestamptz[], %b::bool[]) AS f(id, bar_open_time, once)
    WHERE a.id = f.id
), queued AS (
    INSERT INTO alerts_outboxmessage (topic, key, payload, created_at, attempts, last_error)
    SELECT 'alert_trigger', 'alert_trigger:' || id, jsonb_build_object('alert_trigger_id', id),
        %s, 0, ''
    FROM inserted
    ON CONFLICT (key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM inserted), ARRAY(SELECT id FROM queued ORDER BY id)
"""


def _store_alert_triggers(
    rows: list[dict], fired_bars: dict[int, int], once_alerts: list[int], now: datetime
) -> tuple[int, list[int]]:
    """_write_alert_triggers on PostgreSQL, in one round trip."""
    once = set(once_alerts)
    active, triggered = Alert.Status.ACTIVE, Alert.Status.TRIGGERED
    with _binary_cursor() as cursor:
        cursor.execute(
            _STORE_ALERT_TRIGGERS,
            [
                now,
                [row["alert_id"] for row in rows],
                [row["bar_open_time"] for row in rows],
                [json.dumps(row["snapshot"]) for row in rows],
                active,
                triggered,
                active,
                now,
                list(fired_bars),
                [ms_to_datetime(bar_open) for bar_open in fired_bars.values()],
                [alert_id in once for alert_id in fired_bars],
                now,
            ],
        )
        count, outbox_ids = cursor.fetchone()
        return count, outbox_ids


def _add_outbox(messages: list[tuple[str, str, dict]], now: datetime) -> list[int]:
    """Outbox rows for (topic, key, payload) messages; the new rows' ids."""
    if not messages:
        return []
    rows = [
        {
            "topic": topic,
            "key": key,
            "payload": payload,
            "created_at": now,
            "attempts": 0,
            "last_error": "",
        }
        for topic, key, payload in messages
    ]
    inserted = _insert_rows(OutboxMessage, rows, ["key"], returning=("id",))
    return [row_id for (row_id,) in inserted]
