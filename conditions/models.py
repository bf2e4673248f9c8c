"""The shared condition registry: one row per distinct condition, whoever uses it."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, Length
from django.db.models.lookups import Range

from conditions.engine.timeframes import TIMEFRAMES

TIMEFRAME_CHOICES = [(tf, tf) for tf in TIMEFRAMES]
_CONDITION_ID = re.compile(r"[0-9a-f]{64}")
SYMBOL_CHARACTERS = "A-Z0-9"  # 2 to 20 of them


def text_format(field: str, characters: str, lengths: tuple[int, int], name: str):
    """A check that `field` is made of `characters` (a regex class's inside)
    and has a length in `lengths`.

    Not written as one `^[...]{n,m}$`: PostgreSQL checks every constraint of
    a row at each update of it, whatever the update changed, and its regex
    engine takes about 6 µs on `^[0-9a-f]{64}$` against 0.3 µs on
    `^[0-9a-f]+$` with the length checked apart. Alerts are updated each time
    they fire, registry rows each time they trigger: thousands a cycle in
    `manage.py bench`."""
    return models.CheckConstraint(
        condition=Q(**{f"{field}__regex": f"^[{characters}]+$"}) & Range(Length(field), lengths),
        name=name,
    )


class HoldsCondition(models.Func):
    """Whether a cache row (`indicator_values`) holds a condition's values,
    the condition id given as an expression: jsonb's `?` on PostgreSQL,
    json_type on SQLite."""

    output_field = models.BooleanField()

    def __init__(self, condition_id) -> None:
        super().__init__(models.F("indicator_values"), condition_id)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(%(expressions)s)", arg_joiner=" ? ")

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="(json_type(%(expressions)s || '\"') IS NOT NULL)",
            arg_joiner=", '$.\"' || ",
        )


class ConditionQuerySet(models.QuerySet):
    """Registry rows with what the cache rows of their symbol tell: the
    registry row itself is not written at a bar that only evaluates it."""

    def with_last_evaluated(self) -> ConditionQuerySet:
        """`last_evaluated_at`: when the latest bar it was evaluated at was."""
        latest = _cache_rows().order_by("-candle_time", "timeframe").values("evaluated_at")[:1]
        return self.annotate(last_evaluated_at=models.Subquery(latest))

    def with_evaluation_count(self) -> ConditionQuerySet:
        """`evaluation_count`: the pairs' bars it was evaluated at. Each cache
        row of its symbol is looked into: for a page of conditions, not for a
        whole list."""
        count = _cache_rows().order_by().values("symbol").annotate(n=models.Count("*"))
        return self.annotate(
            evaluation_count=Coalesce(
                models.Subquery(count.values("n"), output_field=models.BigIntegerField()), 0
            )
        )

    def with_evaluations(self) -> ConditionQuerySet:
        return self.with_last_evaluated().with_evaluation_count()


def _cache_rows() -> models.QuerySet:
    """The cache rows holding the registry row a subquery is annotated on."""
    return BarEvaluation.objects.filter(
        HoldsCondition(models.OuterRef("pk")), symbol=models.OuterRef("symbol")
    )


class Condition(models.Model):
    """A canonical condition (CONDITIONS.md section 2), keyed by its SHA-256 id.

    Written when it is registered and when it triggers, never at a bar that
    only evaluates it: that would be an update of every registry row in use
    at every bar (about 100,000 a cycle in `manage.py bench`, a fifth of the
    database's work). Its evaluations are counted from its cache rows
    (`ConditionQuerySet`)."""

    condition_id = models.CharField(max_length=64, primary_key=True)
    condition_type = models.CharField(max_length=32, help_text="kind of the left operand")
    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3, choices=TIMEFRAME_CHOICES)
    indicator_config = models.JSONField(help_text="the canonical form")
    created_at = models.DateTimeField(auto_now_add=True)
    last_triggered_at = models.DateTimeField(null=True, blank=True)
    trigger_count = models.BigIntegerField(default=0)

    objects = ConditionQuerySet.as_manager()

    class Meta:
        db_table = "condition_registry"
        ordering = ["symbol", "timeframe", "condition_id"]
        indexes = [models.Index(fields=["symbol", "timeframe"], name="condition_symbol_tf")]
        constraints = [
            text_format("condition_id", "0-9a-f", (64, 64), "condition_id_sha256"),
            text_format("symbol", SYMBOL_CHARACTERS, (2, 20), "condition_symbol_format"),
            models.CheckConstraint(
                condition=Q(timeframe__in=[tf for tf, _ in TIMEFRAME_CHOICES]),
                name="condition_timeframe_known",
            ),
            models.CheckConstraint(
                condition=Q(trigger_count__gte=0), name="condition_counts_non_negative"
            ),
        ]

    def __str__(self) -> str:
        left = self.indicator_config.get("left", {})
        label = left.get("name") or left.get("field") or left.get("kind", "?")
        return f"{self.symbol} {self.timeframe} {label} {self.indicator_config.get('op')} ({self.condition_id[:10]})"


class ConditionSubscription(models.Model):
    """A bot listening to a registry condition; many bots share one evaluation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="condition_subscriptions"
    )
    bot = models.ForeignKey(
        "bots.Bot", on_delete=models.CASCADE, related_name="condition_subscriptions"
    )
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="subscriptions")
    bot_type = models.CharField(max_length=16)
    bot_config = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_triggered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "user_condition_subscriptions"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["condition", "active"], name="subscription_condition_active")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["bot", "condition"],
                condition=Q(active=True),
                name="one_active_subscription_per_bot",
            ),
        ]

    def __str__(self) -> str:
        return f"bot {self.bot_id} -> {self.condition_id[:10]}"


class BarEvaluationQuerySet(models.QuerySet):
    def holding(self, condition_id: str, symbol: str | None = None) -> BarEvaluationQuerySet:
        """The rows that hold a condition (its symbol's, when given: the
        others cannot), newest first, each with its values there as
        `condition_values`. Nothing for what is not a condition id (on
        SQLite the id goes into a JSON path)."""
        if not _CONDITION_ID.fullmatch(condition_id):
            return self.none()
        rows = self.filter(HoldsCondition(models.Value(condition_id)))
        if symbol is not None:
            rows = rows.filter(symbol=symbol)
        return rows.annotate(
            condition_values=KeyTransform(condition_id, "indicator_values")
        ).order_by("-candle_time", "symbol", "timeframe")


class BarEvaluation(models.Model):
    """Every condition a pair evaluated at one of its closed bars, each one
    evaluated once and read by everyone: `indicator_values` maps each
    condition's id to its values there ({"left", "right", "fired"}).

    One row per pair and bar, not one per condition and bar: a cycle of
    `manage.py bench` writes ~600 rows (one bar of each of its 600 pairs)
    instead of ~103,000, each of which cost PostgreSQL a heap tuple, an index
    entry and a conflict check (a third of its work in the cycle). A condition's own evaluations are
    found by its symbol and id (`HoldsCondition`, `conditions.services`);
    those of a condition deleted from the registry stay in its pairs' rows,
    as what was evaluated then."""

    pk = models.CompositePrimaryKey("symbol", "timeframe", "candle_time")
    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3)
    candle_time = models.DateTimeField(help_text="open time of the evaluated candle")
    indicator_values = models.JSONField(help_text="condition id -> its values at the candle")
    evaluated_at = models.DateTimeField(auto_now_add=True)

    objects = BarEvaluationQuerySet.as_manager()

    class Meta:
        db_table = "condition_evaluation_cache"
        ordering = ["-candle_time"]
        indexes = [
            # A condition's latest evaluation, whatever the pair: the newest
            # rows of its symbol first.
            models.Index(fields=["symbol", "-candle_time"], name="evaluation_symbol_time"),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} @ {self.candle_time:%Y-%m-%d %H:%M}"


class ConditionTrigger(models.Model):
    """A condition that held at a closed candle: at most one row per condition and candle."""

    # Looked up by condition through the unique constraint's index, which
    # starts with it: an index of its own (and Django's LIKE index beside it)
    # would only cost each of the thousands of triggers a cycle inserts.
    condition = models.ForeignKey(
        Condition, on_delete=models.CASCADE, related_name="triggers", db_index=False
    )
    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3)
    triggered_at = models.DateTimeField(auto_now_add=True)
    candle_time = models.DateTimeField()
    trigger_value = models.JSONField(default=dict)
    subscribers_count = models.PositiveIntegerField(default=0)
    processed = models.BooleanField(default=False)

    class Meta:
        db_table = "condition_triggers"
        ordering = ["-candle_time"]
        indexes = [
            models.Index(
                fields=["symbol", "timeframe", "candle_time"], name="trigger_symbol_tf_time"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["condition", "candle_time"], name="one_trigger_per_condition_candle"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.condition_id[:10]} fired @ {self.candle_time:%Y-%m-%d %H:%M}"


class EvaluationCursor(models.Model):
    """The last closed bar evaluated per (symbol, timeframe). Moves in the same
    transaction as the bar's triggers, so after any crash it says exactly
    which bars still need evaluating."""

    symbol = models.CharField(max_length=20)
    timeframe = models.CharField(max_length=3)
    last_bar = models.DateTimeField(help_text="open time of the last evaluated closed bar")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "evaluation_cursors"
        ordering = ["symbol", "timeframe"]
        constraints = [
            models.UniqueConstraint(fields=["symbol", "timeframe"], name="one_cursor_per_pair")
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} @ {self.last_bar:%Y-%m-%d %H:%M}"
