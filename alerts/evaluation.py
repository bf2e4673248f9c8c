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
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache, partial

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.functions import MD5, Cast
from django.utils import timezone

from conditions.engine.errors import ConditionError
from conditions.engine.live import PairEvaluation, PairEvaluator
from conditions.engine.normalize import condition_id as make_condition_id
from conditions.engine.normalize import normalize_condition
from conditions.engine.plan import EvaluationPlan, PlanResult, series_columns
from conditions.engine.playbook import NormalizedAlert, alert_signal, normalize_alert, should_fire
from conditions.marketdata.binance import BinanceSource
from conditions.marketdata.cache import KlineCache
from conditions.metrics import record_evaluation
from conditions.models import Condition, ConditionSubscription, EvaluationCursor

from .evaluation_store import (
    AlertFirings,
    EvaluatedBars,
    Int8Array,
    RegistryMoved,
    Written,
    binary_cursor,
    pair_writes,
    pipeline,
)
from .models import Alert

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

    seen: tuple[str, str | int]  # on PostgreSQL the row version is its xmin
    content: tuple[str, bytes]
    playbook: NormalizedAlert


@dataclass
class _PairState:
    """What the database holds of a pair, read before it is evaluated."""

    # Active alerts: pk, fire_mode, last_fired_bar, expires_at, row version,
    # and the stored content, None when the version is the one remembered.
    alerts: list[tuple]
    # Registry conditions with an active subscription: id, stored config.
    subscribed: list[tuple[str, str]]
    last_bar: datetime | None  # where the pair's evaluation cursor is
    trailing: bool  # open deals whose take profit trails: they need every bar
    # PostgreSQL: the pair's alert generation (alerts migration 0005) these
    # alerts are at; None when the pair has none, and on SQLite.
    generation: int | None = None
    # Whether the alerts were read now, not taken from the process's copy.
    read: bool = True


# What a worker process keeps between evaluations, only ever as a cache: per
# pair, its compiled plan and alert batch, its alerts' playbooks, and (on
# PostgreSQL) its alert rows with the generation they are at; per
# symbol, the registry conditions known to have a row and (on PostgreSQL) the
# registry generation at which they were found (evaluation_store.pair_writes);
# the canonical forms of the registry rows subscriptions read.
_evaluators: dict[tuple[str, str, bool], PairEvaluator] = {}
_remembered: dict[tuple[str, str], dict[int, _Remembered]] = {}
_pair_alerts: dict[tuple[str, str], tuple[int, dict[int, tuple]]] = {}
_registered: dict[str, set[str]] = {}
_checked_generation: dict[str, int] = {}
_registry_canonicals: dict[tuple[str, str], dict] = {}


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

    state = _read_pair(symbol, timeframe)
    playbooks = _active_playbooks(symbol, timeframe, state, forming, now, report)
    canonicals = {} if forming else _subscribed_conditions(state.subscribed)
    for _, remembered in playbooks.values():
        canonicals.update(remembered.playbook.canonicals)
    if not canonicals and (forming or not state.trailing):
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

    bars = _bars_to_evaluate(base_open, state.last_bar, forming)
    evaluation = _evaluate_pair(
        symbol, timeframe, forming, canonicals, playbooks, candles, bars, report
    )
    result = evaluation.result
    report.bars = [int(base_open[i]) for i in bars]
    report.conditions = len(result.series)
    report.indicator_computations = result.stats.indicator_computations

    deciding = time.perf_counter()
    evaluated = _evaluated_bars(evaluation)
    firings = _alert_firings(
        playbooks, evaluation, evaluated, candles[timeframe], bars, forming, now
    )
    deciding_s = time.perf_counter() - deciding
    # The bar still forming is not the registry's: no cache rows, no triggers.
    stored = None if forming or not bars else evaluated
    written = _write(symbol, timeframe, canonicals, stored, firings, now, dispatch)
    if written.inactive_alerts:
        # The process's copy of the pair's alerts is older than their rows.
        _pair_alerts.pop((symbol, timeframe), None)
    elif firings.last_fired:
        transaction.on_commit(partial(_remember_fired, symbol, timeframe, firings))
    report.condition_triggers = written.condition_triggers
    report.alert_triggers = written.alert_triggers
    report.outbox_ids = written.outbox_ids
    if not forming and bars and state.trailing:
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


def _write(
    symbol: str,
    timeframe: str,
    canonicals: dict,
    evaluated: EvaluatedBars | None,
    firings: AlertFirings,
    now: datetime,
    dispatch: bool,
) -> Written:
    """Everything the evaluation produced, in one transaction. A registry row
    this process remembered is gone (an operator deleted it): the write is
    done again, registering it."""
    known = _registered.setdefault(symbol, set())
    for attempt in (1, 2):
        new = {cid: canonical for cid, canonical in canonicals.items() if cid not in known}
        checked = _checked_generation.get(symbol)
        try:
            with transaction.atomic(), pair_writes(now, symbol, checked) as writes:
                # Conditions the registry may lack are registered first.
                writes.register(list(new.values()))
                if evaluated is not None:
                    writes.evaluations(symbol, timeframe, evaluated)
                writes.alert_triggers(firings)
                if evaluated is not None:
                    writes.cursor(symbol, timeframe, evaluated.times[-1])
                written = writes.finish()
                if written.outbox_ids and dispatch:
                    from .dispatch import send_outbox

                    transaction.on_commit(partial(send_outbox, list(written.outbox_ids)))
        except RegistryMoved as moved:
            if attempt == 2:
                raise
            logger.warning("%s on %s %s: registering them again", moved, symbol, timeframe)
            known.difference_update(moved.ids)
            continue
        if written.generation is not None:
            # A registry row of the symbol was deleted since the last check:
            # only what this write found or registered is known to be there.
            known.intersection_update(evaluated.ids if evaluated is not None else ())
            _checked_generation[symbol] = written.generation
        known.update(new)
        return written
    raise AssertionError("unreachable")


def _read_pair(symbol: str, timeframe: str) -> _PairState:
    """The pair's alerts, subscribed registry conditions, evaluation cursor
    and trailing deals: on PostgreSQL in one round trip, alerts' content only
    where their row version is not the one remembered."""
    from bots.services import open_trailing_deals

    remembered = _remembered.get((symbol, timeframe), {})
    if connection.vendor == "postgresql":
        return _read_pair_postgres(symbol, timeframe, remembered)
    rows = list(
        Alert.objects.filter(symbol=symbol, base_timeframe=timeframe, status=Alert.Status.ACTIVE)
        .annotate(version=MD5(Cast("condition_config", TextField())))
        .values_list("pk", "fire_mode", "last_fired_bar", "expires_at", "version")
    )
    # The digest is of the content alone: a new fire mode is a change too.
    unknown = {
        pk
        for pk, fire_mode, _, _, version in rows
        if pk not in remembered or remembered[pk].seen != (fire_mode, version)
    }
    stored = dict(
        Alert.objects.filter(pk__in=unknown)
        .annotate(stored_config=Cast("condition_config", TextField()))
        .values_list("pk", "stored_config")
    )
    alerts = [
        (*row, stored.get(row[0]))
        for row in rows
        if row[0] not in unknown or row[0] in stored  # else deleted since the first query
    ]
    subscribed = ConditionSubscription.objects.filter(
        active=True, condition__symbol=symbol, condition__timeframe=timeframe
    ).values_list("condition_id", flat=True)
    return _PairState(
        alerts,
        list(
            Condition.objects.filter(pk__in=subscribed)
            .annotate(config=Cast("indicator_config", TextField()))
            .values_list("pk", "config")
        ),
        EvaluationCursor.objects.filter(symbol=symbol, timeframe=timeframe)
        .values_list("last_bar", flat=True)
        .first(),
        open_trailing_deals(symbol, timeframe).exists(),
    )


# The pair's alert generation, in a row of its own (id NULL), then its
# active alerts, unless the process has them at that generation already: one
# statement, one snapshot, so the rows are at the generation given.
_READ_ALERTS = """
WITH pair AS (
    SELECT generation FROM alert_pair_generations WHERE symbol = %(symbol)s AND timeframe = %(tf)s
)
SELECT NULL::bigint, NULL::varchar, NULL::timestamptz, NULL::timestamptz,
    (SELECT generation FROM pair), NULL::text
UNION ALL
SELECT a.id, a.fire_mode, a.last_fired_bar, a.expires_at, a.xmin::text::bigint,
    CASE WHEN k.version IS DISTINCT FROM a.xmin::text::bigint THEN a.condition_config::text END
FROM alerts_alert a LEFT JOIN unnest(%(ids)b::bigint[], %(versions)b::bigint[]) AS k(id, version)
    ON k.id = a.id
WHERE a.symbol = %(symbol)s AND a.base_timeframe = %(tf)s AND a.status = %(active)s
    AND (%(known)s::bigint IS NULL
         OR %(known)s::bigint IS DISTINCT FROM (SELECT generation FROM pair))
"""
_READ_SUBSCRIBED = """
SELECT r.condition_id, r.indicator_config::text FROM condition_registry r
WHERE r.symbol = %s AND r.timeframe = %s AND EXISTS (
    SELECT 1 FROM user_condition_subscriptions s WHERE s.condition_id = r.condition_id AND s.active)
"""
_READ_CURSOR = "SELECT last_bar FROM evaluation_cursors WHERE symbol = %s AND timeframe = %s"
# bots.services.open_trailing_deals: open deals whose bot's settings give a
# trailing deviation (not absent, not null).
_READ_TRAILING = """
SELECT EXISTS (SELECT 1 FROM bots_deal d JOIN bots_bot b ON b.id = d.bot_id
    WHERE d.state = %s AND b.symbol = %s AND b.base_timeframe = %s
    AND b.settings -> 'trailing_deviation' <> 'null'::jsonb)
"""


def _read_pair_postgres(
    symbol: str, timeframe: str, remembered: dict[int, _Remembered]
) -> _PairState:
    """_read_pair's queries in one pipeline. The alerts are read only when
    the pair's alert generation moved since the process last read them (see
    alerts migration 0005); then the content is sent only for the alerts
    whose row version (its xmin, which any update of the row moves, free to
    read) is not the one remembered."""
    from bots.models import Deal

    cached = _pair_alerts.get((symbol, timeframe))
    count = len(remembered)
    ids = np.fromiter(remembered, dtype=np.int64, count=count)
    versions = np.fromiter((known.seen[1] for known in remembered.values()), np.int64, count)
    with pipeline():
        alerts, subscribed, cursor, trailing = (binary_cursor() for _ in range(4))
        alerts.execute(
            _READ_ALERTS,
            {
                "symbol": symbol,
                "tf": timeframe,
                "ids": Int8Array.of(ids, count),
                "versions": Int8Array.of(versions, count),
                "active": Alert.Status.ACTIVE,
                "known": cached[0] if cached else None,
            },
        )
        subscribed.execute(_READ_SUBSCRIBED, [symbol, timeframe])
        cursor.execute(_READ_CURSOR, [symbol, timeframe])
        trailing.execute(_READ_TRAILING, [Deal.State.OPEN, symbol, timeframe])
        rows = alerts.fetchall()
        subscribed_rows = subscribed.fetchall()
        last_bar = cursor.fetchone()
        trails = trailing.fetchone()[0]
    (generation,) = (row[4] for row in rows if row[0] is None)
    read = not (cached and generation == cached[0])
    if read:
        active = [row for row in rows if row[0] is not None]
    else:
        active = list(cached[1].values())
    return _PairState(
        active, subscribed_rows, last_bar[0] if last_bar else None, trails, generation, read
    )


def _active_playbooks(
    symbol: str,
    timeframe: str,
    state: _PairState,
    forming: bool,
    now: datetime,
    report: EvaluationReport,
) -> dict[int, tuple[_AlertRow, _Remembered]]:
    """The pair's active alerts (per_bar ones only, with `forming`) and their
    playbooks; those past their deadline are moved to expired instead.

    An alert is parsed only when its stored content differs from what its
    remembered playbook was made from: a new row version with the same content
    (the row was updated for last_fired_bar) keeps its playbook. An alert that
    cannot be evaluated is skipped and reported, at every evaluation.

    On PostgreSQL the rows are kept with their generation, the content only of
    those skipped: read again, they are parsed again."""
    remembered = _remembered.get((symbol, timeframe), {})
    kept: dict[int, _Remembered] = {}
    playbooks = {}
    expired = []
    for pk, fire_mode, last_fired_bar, expires_at, version, stored in state.alerts:
        # expires_at is the user's deadline on the wall clock, as the API
        # checks it; the exchange's clock decides bars, not deadlines.
        if expires_at is not None and expires_at <= now:
            expired.append(pk)
            continue
        known = remembered.get(pk)
        if stored is not None:
            content = (fire_mode, hashlib.md5(stored.encode(), usedforsecurity=False).digest())
            if known and known.content == content:
                known = replace(known, seen=(fire_mode, version))
            else:
                known = _parse(pk, symbol, timeframe, fire_mode, stored, version, content, report)
        if known is None:
            continue
        kept[pk] = known
        if not forming or fire_mode == Alert.FireMode.PER_BAR:
            playbooks[pk] = (_AlertRow(pk, fire_mode, last_fired_bar), known)
    _remembered[(symbol, timeframe)] = kept
    if state.generation is None:
        _pair_alerts.pop((symbol, timeframe), None)
    elif state.read:  # else the copy is these rows already
        _pair_alerts[(symbol, timeframe)] = (
            state.generation,
            {row[0]: (*row[:5], None if row[0] in kept else row[5]) for row in state.alerts},
        )
    if expired:
        report.expired_alerts = Alert.objects.filter(
            pk__in=expired, status=Alert.Status.ACTIVE
        ).update(status=Alert.Status.EXPIRED, updated_at=now)
        # Expiring does not move the pair's generation: the process forgets
        # them itself (all of the pair's rows when some were not active).
        cached = _pair_alerts.get((symbol, timeframe))
        if report.expired_alerts < len(expired):
            _pair_alerts.pop((symbol, timeframe), None)
        elif cached is not None:
            for pk in expired:
                cached[1].pop(pk, None)
    return playbooks


def _remember_fired(symbol: str, timeframe: str, firings: AlertFirings) -> None:
    """After the commit, in the rows the process keeps of the pair's alerts:
    the bars they last fired at, and `once` alerts gone (now triggered).

    Neither moves the pair's generation (alerts migration 0005), so another
    process may hold older rows. An older last fired bar only lets it decide
    to fire at a bar that already has the alert's trigger (a closed bar that
    fired while forming, or the forming bar again), and the trigger's
    uniqueness per alert and bar writes nothing then; bars before the pair's
    cursor, read at every evaluation, are never evaluated again. An alert no
    longer active gets no trigger at all (evaluation_store), and the process
    that tried reads the pair's alerts again."""
    cached = _pair_alerts.get((symbol, timeframe))
    if cached is None:
        return
    rows = cached[1]
    for pk, bar in firings.last_fired.items():
        row = rows.get(pk)
        if row is not None:
            rows[pk] = (row[0], row[1], bar, *row[3:])
    for pk in firings.once:
        rows.pop(pk, None)


def _parse(
    pk: int,
    symbol: str,
    timeframe: str,
    fire_mode: str,
    stored: str,
    version: str | int,
    content: tuple[str, bytes],
    report: EvaluationReport,
) -> _Remembered | None:
    # What alert_input gives normalized_alert, without building a model.
    raw = {
        "symbol": symbol,
        "base_timeframe": timeframe,
        "conditionConfig": json.loads(stored),
        "fireMode": fire_mode,
    }
    try:
        return _Remembered((fire_mode, version), content, normalize_alert(raw))
    except ConditionError as exc:
        logger.error("alert %s on %s %s skipped: %s", pk, symbol, timeframe, exc)
        report.skipped_alerts.append(pk)
        return None


def _hand_bars_to_trailing_deals(
    symbol: str, timeframe: str, base: pd.DataFrame, bars: list[int]
) -> None:
    from bots.tasks import trail_deals

    rows = base.iloc[bars]
    payload = [
        [int(o), repr(float(h)), repr(float(c))]
        for o, h, c in zip(rows["open_time"], rows["high"], rows["close"], strict=True)
    ]
    trail_deals.delay(symbol, timeframe, payload)


def _subscribed_conditions(subscribed: list[tuple[str, str]]) -> dict[str, dict]:
    """The canonical forms of the pair's subscribed registry conditions; a
    row whose stored form no longer normalizes to itself is skipped, never
    evaluated."""
    canonicals = {}
    for cid, config in subscribed:
        canonical = _registry_canonicals.get((cid, config))
        if canonical is None:
            try:
                canonical = normalize_condition(json.loads(config))
                if make_condition_id(canonical) != cid:
                    raise ConditionError("indicator_config", "does not match its condition_id")
            except ConditionError as exc:
                logger.error("registry condition %s skipped: %s", cid, exc)
                continue
            _registry_canonicals[(cid, config)] = canonical
        canonicals[cid] = canonical
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
    alerts = [((pk, known.content), known.playbook) for pk, (_, known) in playbooks.items()]
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
    for alert_id, (_row, known) in list(playbooks.items()):
        playbook = known.playbook
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
        kept.append((alert_id, known.content))
    result = PlanResult(base_open_time=base_open, series=series)
    result.stats.indicator_computations = indicator_computations
    matrix = np.array(holds, dtype=bool).reshape(len(holds), len(bars))
    return PairEvaluation(result, kept, matrix, playbook_seconds=0.0)


def _bars_to_evaluate(
    base_open: np.ndarray, evaluated: datetime | None, forming: bool
) -> list[int]:
    """The bars after the cursor's (at most MAX_CATCHUP_BARS), or the last one."""
    last = len(base_open) - 1
    if forming or evaluated is None:
        return [last]
    first = int(np.searchsorted(base_open, int(evaluated.timestamp() * 1000), side="right"))
    return list(range(max(first, last - MAX_CATCHUP_BARS + 1), last + 1))


def _evaluated_bars(evaluation: PairEvaluation) -> EvaluatedBars:
    """Every condition at every bar evaluated, as columns: what the registry's
    cache rows, the condition triggers and the alerts' snapshots are made of."""
    result = evaluation.result
    indexes = [evaluation.series_index(position) for position in range(evaluation.bars)]
    columns = series_columns(result.series, indexes)
    times = [ms_to_datetime(int(result.base_open_time[index])) for index in indexes]
    return EvaluatedBars(**vars(columns), times=times)


def _alert_firings(
    playbooks: dict,
    evaluation: PairEvaluation,
    evaluated: EvaluatedBars,
    base: pd.DataFrame,
    bars: Iterable[int],
    forming: bool,
    now: datetime,
) -> AlertFirings:
    """The triggers of the alerts that fire at the bars evaluated."""
    result = evaluation.result
    closes = base["close"].to_numpy()
    last_bar = len(base) - 1
    bars = list(bars)
    firings = AlertFirings()
    width = len(evaluated.ids)
    row_of = {cid: row for row, cid in enumerate(evaluated.ids)}
    # An alert that holds at none of the bars cannot fire at any of them.
    for position in np.flatnonzero(evaluation.holds.any(axis=1)):
        alert_id, _ = evaluation.alert_keys[position]
        alert, known = playbooks[alert_id]
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
                    cid: evaluated.values_at(offset * width + row_of[cid])
                    for cid in known.playbook.condition_ids
                },
            }
            bar_time = ms_to_datetime(bar_open)
            firings.rows.append(
                {
                    "alert_id": alert_id,
                    "bar_open_time": bar_time,
                    "fired_at": now,
                    "snapshot": snapshot,
                }
            )
            last_fired = bar_open
            firings.last_fired[alert_id] = bar_time
            if alert.fire_mode == Alert.FireMode.ONCE:
                firings.once.append(alert_id)
                break
    return firings
