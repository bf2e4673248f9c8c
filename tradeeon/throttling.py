"""What one client may ask of the API: how often, how much, how deep.

- Rates: DRF's UserRateThrottle (every request, per user) and
  ScopedRateThrottle (per user and endpoint scope: register, subscribe,
  preview; per address for the token endpoint), rates in
  REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]. Their counters live in the
  default Django cache, which is Redis in production, so every web process
  counts against the same limit. 429 answers carry Retry-After. Should the
  cache be unreachable they let requests through (and log it): a Redis
  restart must not turn every API call into a 500.
- Body size: `BoundedJSONParser` refuses a body above DATA_UPLOAD_MAX_MEMORY_SIZE
  with 413 (Django enforces that limit only for form bodies, and DRF reads
  JSON bodies as a stream, so without this a JSON body has no limit at all).
- Free-form JSON (conditionConfig, action, bot_config, entry) is stored as
  jsonb: `check_storable_json` refuses what PostgreSQL cannot store (NUL
  characters, non-finite numbers) or what no legitimate client sends (deep
  nesting) with a 400 instead of a database error.
- Page size: `BoundedLimitOffsetPagination`, ?limit= capped at
  REST_FRAMEWORK["PAGE_SIZE_MAX"].
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework import exceptions, serializers, throttling
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)

MAX_JSON_DEPTH = 12


class _FailOpen:
    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except (RedisError, OSError):
            logger.warning("throttle cache unreachable: request let through", exc_info=True)
            return True


class UserRateThrottle(_FailOpen, throttling.UserRateThrottle):
    """Every request, per user (per address when anonymous)."""


class ScopedRateThrottle(_FailOpen, throttling.ScopedRateThrottle):
    """Per user and the view's throttle_scope."""


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def max_body_bytes() -> int:
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)


class BoundedJSONParser(JSONParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE bytes; larger ones get 413."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None):
        parser_context = parser_context or {}
        limit = max_body_bytes()
        request = parser_context.get("request")
        declared = 0
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
        if limit and declared > limit:
            from tradeeon.api_errors import (
                PayloadTooLarge,
            )  # api_errors imports DRF views, which import this

            raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
        # The declared length can be absent or wrong (chunked bodies): read one
        # byte past the limit to know.
        raw = stream.read(limit + 1) if limit else stream.read()
        if limit and len(raw) > limit:
            from tradeeon.api_errors import PayloadTooLarge

            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
            parse_constant = _refuse_constant if api_settings.STRICT_JSON else None
            return json.loads(text, parse_constant=parse_constant)
        except (ValueError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


def _refuse(path: str, message: str) -> serializers.ValidationError:
    return serializers.ValidationError({path: [message]} if path else [message])


def check_storable_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Raise ValidationError (keyed by the dotted path inside `value`) for JSON
    that jsonb cannot store or that nests deeper than `max_depth`; return
    `value` unchanged."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise _refuse(path, f"nested more than {max_depth} levels deep")
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    raise _refuse(path, "keys cannot contain NUL characters")
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, f"{path}.{index}" if path else str(index), depth + 1))
        elif isinstance(item, str) and "\x00" in item:
            raise _refuse(path, "cannot contain NUL characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _refuse(path, "must be a finite number")
    return value


class StorableJSONField(serializers.JSONField):
    """A free-form JSON object stored as jsonb (see check_storable_json)."""

    def __init__(self, *args: Any, max_depth: int = MAX_JSON_DEPTH, **kwargs: Any) -> None:
        self.max_depth = max_depth
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        # DRF prefixes the paths check_storable_json names with this field's name.
        return check_storable_json(value, max_depth=self.max_depth)


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """?limit= and ?offset=, the limit capped so no page is unbounded. Unlike
    DRF's, a limit or offset that is not a whole number in range is a 400, not
    silently the default: the client asked for something else."""

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return int(settings.REST_FRAMEWORK.get("PAGE_SIZE_MAX", 200))

    def get_limit(self, request: Any) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return min(self.default_limit, self.max_limit)
        return min(_whole_query_param(raw, self.limit_query_param, minimum=1), self.max_limit)

    def get_offset(self, request: Any) -> int:
        raw = request.query_params.get(self.offset_query_param)
        return 0 if raw is None else _whole_query_param(raw, self.offset_query_param, minimum=0)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"] = {**parameter["schema"], "minimum": minimum}
            if parameter["name"] == self.limit_query_param:
                parameter["description"] = f"rows per page, at most {self.max_limit}"
        return parameters


def _whole_query_param(raw: str, name: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise exceptions.ValidationError({name: ["must be a whole number"]}) from None
    if value < minimum:
        raise exceptions.ValidationError({name: [f"must be at least {minimum}"]})
    return value
