"""The API's one error shape, as tests read it."""

from __future__ import annotations


def errors_of(response) -> dict[str | None, str]:
    """The errors as {field: message}; fails unless the body has exactly the one shape."""
    body = response.json()
    assert set(body) == {"errors"}, body
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"field", "message", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error
    return {error["field"]: error["message"] for error in body["errors"]}
