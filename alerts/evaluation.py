"""evaluate_symbol: one (symbol, timeframe) pair at its newly closed bars.

Klines once, the engine's plan once for every condition on the pair (registry
conditions of bots and the conditions of every active alert), then one
transaction with everything the bar produced: condition triggers, alert
triggers (unique per alert and bar: the database is the debounce), status
changes, and outbox rows. Dispatch is queued only after that commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conditions.bulk import insert_new
from conditions.engine.errors import ConditionError
from conditions.engine.normalize import condition_id as make_condition_id
from conditions.engine.normalize import normalize_condition
from conditions.engine.plan import EvaluationPlan, PlanResult
from conditions.engine.playbook import alert_signal, should_fire
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
from .services import normalized_alert

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


def evaluate_symbol(
    symbol: str,
    timeframe: str,
    *,
    now_ms: int | None = None,
    forming: bool = False,
    source: KlineCache | None = None,
) -> EvaluationReport:
    """Evaluate the pair's closed bars not evaluated yet (or, with `forming`,
    the per_bar alerts on the bar still forming)."""
    started = time.perf_counter()
    source = source or market()
    report = EvaluationReport(symbol, timeframe)
    now_ms = int(now_ms if now_ms is not None else source.source.server_time_ms())
    now = timezone.now()

    # expires_at is the user's deadline on the wall clock, as the API checks
    # it; the exchange's clock decides bars, not deadlines.
    report.expired_alerts = Alert.objects.filter(
        symbol=symbol,
        base_timeframe=timeframe,
        status=Alert.Status.ACTIVE,
        expires_at__lte=now,
    ).update(status=Alert.Status.EXPIRED, updated_at=now)

    alerts = Alert.objects.filter(
        symbol=symbol, base_timeframe=timeframe, status=Alert.Status.ACTIVE
    )
    if forming:
        alerts = alerts.filter(fire_mode=Alert.FireMode.PER_BAR)
    playbooks = {}
    for alert in alerts:
        try:
            playbooks[alert.pk] = (alert, normalized_alert(alert))
        except ConditionError as exc:
            logger.error("alert %s on %s %s skipped: %s", alert.pk, symbol, timeframe, exc)
            report.skipped_alerts.append(alert.pk)

    canonicals = {} if forming else _subscribed_conditions(symbol, timeframe)
    for _, playbook in playbooks.values():
        for step in playbook.steps:
            canonicals.setdefault(step.condition_id, step.canonical)
    if not canonicals and (forming or not _trailing_deals(symbol, timeframe).exists()):
        return report

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

    result = _run_plan(canonicals, candles, timeframe, playbooks, report)
    bars = _bars_to_evaluate(symbol, timeframe, base_open, forming)
    report.bars = [int(base_open[i]) for i in bars]
    report.conditions = len(result.series)
    report.indicator_computations = result.stats.indicator_computations

    with transaction.atomic():
        if not forming:
            _record_conditions(symbol, timeframe, canonicals, result, bars, now, report)
        _fire_alerts(playbooks, result, candles[timeframe], bars, forming, now, report)
        if not forming and bars:
            EvaluationCursor.objects.update_or_create(
                symbol=symbol,
                timeframe=timeframe,
                defaults={"last_bar": ms_to_datetime(int(base_open[bars[-1]]))},
            )
        if report.outbox_ids:
            from .dispatch import send_outbox

            ids = list(report.outbox_ids)
            transaction.on_commit(lambda: send_outbox(ids))
    if not forming and bars:
        _hand_bars_to_trailing_deals(symbol, timeframe, candles[timeframe], bars)
    report.duration_ms = (time.perf_counter() - started) * 1000
    record_evaluation(symbol, timeframe, report)
    return report


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


def _run_plan(
    canonicals: dict, candles: dict, timeframe: str, playbooks: dict, report: EvaluationReport
) -> PlanResult:
    """One plan for the whole pair. Should it fail, each alert gets its own plan
    so that one bad alert cannot stop the others on its symbol."""
    try:
        return EvaluationPlan(canonicals.values()).run(candles, timeframe)
    except Exception:
        logger.exception(
            "shared plan failed on %s %s; evaluating alerts one by one",
            next(iter(canonicals.values()))["symbol"],
            timeframe,
        )
    merged = None
    for alert_id, (_alert, playbook) in list(playbooks.items()):
        try:
            part = EvaluationPlan(step.canonical for step in playbook.steps).run(candles, timeframe)
        except Exception:
            logger.exception("alert %s skipped: its conditions cannot be evaluated", alert_id)
            report.skipped_alerts.append(alert_id)
            del playbooks[alert_id]
            continue
        if merged is None:
            merged = part
        else:
            merged.series.update(part.series)
            merged.stats.indicator_computations += part.stats.indicator_computations
    if merged is None:
        base = candles[timeframe]["open_time"].to_numpy(dtype=np.int64)
        merged = PlanResult(base_open_time=base, series={})
    return merged


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
    result: PlanResult,
    bars: list[int],
    now: datetime,
    report: EvaluationReport,
) -> None:
    if not bars:
        return
    known = set(Condition.objects.filter(pk__in=list(canonicals)).values_list("pk", flat=True))
    for cid in canonicals.keys() - known:
        register_canonical(canonicals[cid])
    ids = list(result.series)
    Condition.objects.filter(pk__in=ids).update(
        last_evaluated_at=now, evaluation_count=F("evaluation_count") + len(bars)
    )

    evaluations, triggers = [], []
    for bar in bars:
        candle_time = ms_to_datetime(int(result.base_open_time[bar]))
        for cid in ids:
            series = result.series[cid]
            values = series.values_at(bar)
            evaluations.append(
                ConditionEvaluation(
                    condition_id=cid,
                    symbol=symbol,
                    timeframe=timeframe,
                    candle_time=candle_time,
                    indicator_values={**values, "fired": bool(series.fired[bar])},
                    evaluated_at=now,
                )
            )
            if series.fired[bar]:
                triggers.append(
                    {
                        "condition_id": cid,
                        "symbol": symbol,
                        "timeframe": timeframe,
                        "candle_time": candle_time,
                        "triggered_at": now,
                        "trigger_value": values,
                        "processed": False,
                    }
                )
    ConditionEvaluation.objects.bulk_create(evaluations, batch_size=1000, ignore_conflicts=True)
    if not triggers:
        return
    counts = subscriber_counts({row["condition_id"] for row in triggers})
    for row in triggers:
        row["subscribers_count"] = counts.get(row["condition_id"], 0)
    inserted = insert_new(
        ConditionTrigger, triggers, ["condition", "candle_time"], returning=("id", "condition")
    )
    report.condition_triggers = len(inserted)
    fired_ids = [cid for _, cid in inserted]
    # A catch-up inserts several triggers of one condition at once: one
    # update per distinct number of new triggers, not one per condition.
    by_count: dict[int, list[str]] = {}
    for cid, count in Counter(fired_ids).items():
        by_count.setdefault(count, []).append(cid)
    for count, cids in by_count.items():
        Condition.objects.filter(pk__in=cids).update(
            last_triggered_at=now, trigger_count=F("trigger_count") + count
        )
    with_bots = set(
        ConditionSubscription.objects.filter(condition_id__in=fired_ids, active=True).values_list(
            "condition_id", flat=True
        )
    )
    _add_outbox(
        report,
        [
            ("condition_trigger", f"condition_trigger:{tid}", {"condition_trigger_id": tid})
            for tid, cid in inserted
            if cid in with_bots
        ],
    )


def _fire_alerts(
    playbooks: dict,
    result: PlanResult,
    base: pd.DataFrame,
    bars: Iterable[int],
    forming: bool,
    now: datetime,
    report: EvaluationReport,
) -> None:
    raw = {cid: series.fired for cid, series in result.series.items()}
    closes = base["close"].to_numpy()
    last_bar = len(base) - 1
    rows, once_alerts, fired_bars = [], [], {}
    for alert_id, (alert, playbook) in playbooks.items():
        try:
            signal = alert_signal(playbook, raw)
        except KeyError:
            continue  # its conditions were dropped with a failed plan
        last_fired = int(alert.last_fired_bar.timestamp() * 1000) if alert.last_fired_bar else None
        for bar in bars:
            bar_open = int(result.base_open_time[bar])
            closed = not (forming and bar == last_bar)
            if not should_fire(
                alert.fire_mode,
                holds=bool(signal[bar]),
                bar_closed=closed,
                bar_open_ms=bar_open,
                last_fired_bar_ms=last_fired,
            ):
                continue
            snapshot = {
                "close": float(closes[bar]),
                "bar_closed": closed,
                "values": {
                    cid: result.series[cid].values_at(bar) for cid in playbook.condition_ids
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
    if not rows:
        return
    inserted = insert_new(AlertTrigger, rows, ["alert", "bar_open_time"], returning=("id", "alert"))
    report.alert_triggers = len(inserted)
    for alert_id, bar_open in fired_bars.items():
        Alert.objects.filter(pk=alert_id).update(last_fired_bar=ms_to_datetime(bar_open))
    if once_alerts:
        Alert.objects.filter(pk__in=once_alerts, status=Alert.Status.ACTIVE).update(
            status=Alert.Status.TRIGGERED, updated_at=now
        )
    _add_outbox(
        report,
        [
            ("alert_trigger", f"alert_trigger:{tid}", {"alert_trigger_id": tid})
            for tid, _ in inserted
        ],
    )


def _add_outbox(report: EvaluationReport, messages: list[tuple[str, str, dict]]) -> None:
    if not messages:
        return
    rows = [
        {
            "topic": topic,
            "key": key,
            "payload": payload,
            "created_at": timezone.now(),
            "attempts": 0,
            "last_error": "",
        }
        for topic, key, payload in messages
    ]
    report.outbox_ids.extend(row_id for (row_id,) in insert_new(OutboxMessage, rows, ["key"]))
