"""The one error raised for any condition or alert input that cannot be used.

The API turns it into a 400 whose body names the field, so `field` is a dotted
path into what the client sent ("conditions.0.condition.operator",
"timeframe") and `reason` is a sentence a user can act on.
"""

from __future__ import annotations


class ConditionError(ValueError):
    """Invalid condition input: `field` says where, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def within(self, prefix: str) -> ConditionError:
        """The same error seen from an enclosing object, e.g. `within("conditions.0")`."""
        if not prefix:
            return ConditionError(self.field, self.reason)
        if not self.field:
            return ConditionError(prefix, self.reason)
        return ConditionError(f"{prefix}.{self.field}", self.reason)

    def __reduce__(self) -> tuple[type[ConditionError], tuple[str, str]]:
        # Celery and multiprocessing pickle exceptions; the default reduction
        # would call __init__ with the formatted message only.
        return (ConditionError, (self.field, self.reason))
