"""The one error shape of the API, and the exception handler that produces it.

Every answer that is not a success has the body

    {"errors": [{"field": "conditionConfig.conditions.0.indicator",
                 "message": "unknown indicator 'RSX' (...)",
                 "code": "invalid"}]}

`field` is a dotted path into what the client sent (list items by index), or
null when the error is not about one field (authentication, throttling, a
missing object, a failing market data source). DRF's nested validation
errors, the engine's ConditionError (whose field is already such a path) and
Django's own 404 and 403 all come out in this shape.

The schema documents it too: `document_error_responses` is a drf-spectacular
postprocessing hook that adds the error responses every operation can give.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, IntegrityError
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from conditions.engine.errors import ConditionError
from conditions.marketdata.base import (
    InvalidMarketRequest,
    MarketDataError,
    RateLimited,
    UnknownInterval,
    UnknownSymbol,
)

logger = logging.getLogger(__name__)

ERROR_COMPONENT = "ErrorResponse"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the object."
    default_code = "conflict"


class ReferenceNotFound(exceptions.NotFound):
    """A body names an object the user cannot see: 404, like the object's own URL
    would answer, so that another user's ids reveal nothing."""

    def __init__(self, field: str, detail: str = "No such object.") -> None:
        super().__init__(detail)
        self.field = field


class MarketDataFailed(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Market data is unavailable right now; try again shortly."
    default_code = "market_data_unavailable"

    def __init__(self, detail: str, wait: float | None = None) -> None:
        super().__init__(detail)
        # DRF's handler turns `wait` into a Retry-After header.
        self.wait = wait


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(
        allow_null=True, help_text="dotted path into the request (null: not about one field)"
    )
    message = serializers.CharField()
    code = serializers.CharField()


class ErrorResponseSerializer(serializers.Serializer):
    errors = ErrorItemSerializer(many=True)


def flatten_errors(detail: Any, prefix: str = "") -> Iterator[dict]:
    """DRF's nested ValidationError detail as a flat list of {field, message, code}."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                yield from flatten_errors(value, prefix)
            else:
                yield from flatten_errors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(detail, list | tuple):
        for index, item in enumerate(detail):
            if isinstance(item, Mapping | list | tuple):
                # A list of nested objects or lists: position is part of the path.
                yield from flatten_errors(item, f"{prefix}.{index}" if prefix else str(index))
            else:
                yield from flatten_errors(item, prefix)
    else:
        yield {
            "field": prefix or None,
            "message": str(detail),
            "code": getattr(detail, "code", None) or "invalid",
        }


def market_data_exception(exc: MarketDataError) -> exceptions.APIException:
    """What a market data failure means to an API client: the exchange refusing
    the request names the field; anything else is a 503 to retry later."""
    if isinstance(exc, UnknownSymbol):
        return exceptions.ValidationError(
            {"symbol": [f"unknown symbol {exc.symbol!r}: the exchange does not list it"]}
        )
    if isinstance(exc, UnknownInterval):
        return exceptions.ValidationError(
            {"base_timeframe": ["the exchange does not serve this timeframe"]}
        )
    if isinstance(exc, InvalidMarketRequest):
        return MarketDataFailed(f"the exchange refused the market data request: {exc.message}")
    if isinstance(exc, RateLimited):
        return MarketDataFailed(
            "the exchange is rate limiting market data requests; try again later",
            wait=max(1.0, exc.retry_after_s),
        )
    # The exchange's address and the retries are for the log, not the client.
    logger.warning("market data unavailable to an API request: %s", exc)
    return MarketDataFailed(
        "market data is unavailable right now (the exchange did not answer); try again shortly",
        wait=5,
    )


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error in the one shape."""
    if isinstance(exc, ConditionError):
        # Its field is already the dotted path into the request.
        exc = exceptions.ValidationError({exc.field: [exc.reason]} if exc.field else [exc.reason])
    elif isinstance(exc, MarketDataError):
        exc = market_data_exception(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"The request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    elif isinstance(exc, IntegrityError):
        # Validation runs first; this is a race with another request (or a
        # validation gap, hence the traceback in the log).
        logger.exception("integrity error answered with 409")
        exc = Conflict("The request conflicts with data saved meanwhile; try again.")
    elif isinstance(exc, DataError):
        logger.exception("data error answered with 400")
        exc = exceptions.ValidationError("A value is out of range or cannot be stored.")

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, Mapping) and set(data) == {"detail"}:
        # Not a validation error: one message, about the request as a whole
        # (or about the one field a ReferenceNotFound names).
        detail = data["detail"]
        code = getattr(detail, "code", None) or getattr(exc, "default_code", None) or "error"
        errors = [{"field": getattr(exc, "field", None), "message": str(detail), "code": code}]
    else:
        errors = list(flatten_errors(data))
    response.data = {"errors": errors}
    return response


# --- the schema ----------------------------------------------------------------

_ERROR_DESCRIPTIONS = {
    "400": "Invalid request: `errors` names each field and what is wrong with it.",
    "401": "Authentication required (Authorization: Token <key>) or invalid.",
    "403": "Not allowed (for session authentication: a missing CSRF token).",
    "404": "No such object among yours (another user's id answers this too).",
    "409": "Conflicts with the object's current state.",
    "413": "The request body is too large.",
    "415": "Unsupported content type: send application/json.",
    "429": "Too many requests: wait for the seconds in Retry-After.",
    "503": "Market data is unavailable: retry after the seconds in Retry-After.",
}


def _error_response(code: str) -> dict:
    response: dict = {
        "description": _ERROR_DESCRIPTIONS[code],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
        },
    }
    if code in ("429", "503"):
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
        }
    return response


def document_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the error responses of every operation.

    What each operation can answer follows from what it takes: a body can be
    malformed or too large, a path id can be someone else's, anything
    authenticated can be refused or throttled. Responses a view declares
    itself (409, 503) are kept.
    """
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_COMPONENT] = {
        "type": "object",
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {
                            "type": "string",
                            "nullable": True,
                            "description": "dotted path into the request; null when the "
                            "error is not about one field",
                        },
                        "message": {"type": "string"},
                        "code": {"type": "string"},
                    },
                    "required": ["field", "message", "code"],
                },
            }
        },
        "required": ["errors"],
    }
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = ["429"]
            anonymous = {} in operation.get("security", [{}])
            if not anonymous:
                codes += ["401", "403"]
            has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
            if "requestBody" in operation:
                codes += ["400", "413", "415"]
            elif has_query:
                codes.append("400")
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                codes.append("404")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, _error_response(code))
            for code in ("404", "409", "503"):
                # Declared by the view (with OpenApiResponse) without a body schema.
                if code in responses and "content" not in responses[code]:
                    responses[code] = _error_response(code)
    return result
