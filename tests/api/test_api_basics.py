"""What holds for the whole API: authentication, the error shape, limits on
bodies and pages, throttling."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from alerts.models import Alert
from tests.api.error_shape import errors_of
from tests.factories import AlertFactory, UserFactory

pytestmark = pytest.mark.django_db

PUBLIC_PATHS = {"/api/auth/token/"}
RSI_ALERT = {
    "symbol": "ETHBTC",
    "base_timeframe": "5m",
    "conditionConfig": {"conditions": [{"indicator": "RSI", "operator": "<", "compareValue": 30}]},
}


def schema_operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if path not in PUBLIC_PATHS
    ]


def concrete(path: str) -> str:
    return (
        path.replace("{condition_id}", "ab" * 32)
        .replace("{subscription_id}", "1")
        .replace("{id}", "1")
    )


@pytest.mark.parametrize(("method", "path"), schema_operations())
def test_every_operation_but_the_token_one_requires_a_user(anonymous_client, method, path):
    response = anonymous_client.generic(
        method, concrete(path), "{}", content_type="application/json"
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert None in errors_of(response)


def test_the_token_endpoint_trades_a_password_for_a_token_that_authenticates(anonymous_client):
    UserFactory(username="ada", password="analytical engine")

    response = anonymous_client.post(
        "/api/auth/token/", {"username": "ada", "password": "analytical engine"}, format="json"
    )
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")

    assert response.status_code == 200
    assert anonymous_client.get("/api/alerts/").status_code == 200


def test_a_wrong_password_gets_no_token(anonymous_client):
    UserFactory(username="ada", password="analytical engine")

    response = anonymous_client.post(
        "/api/auth/token/", {"username": "ada", "password": "difference engine"}, format="json"
    )

    assert response.status_code == 400
    assert "Unable to log in" in errors_of(response)[None]


def test_a_browser_session_authenticates_too(anonymous_client, user):
    anonymous_client.force_login(user)

    response = anonymous_client.get("/api/alerts/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"Alert List" in response.content


def test_schema_and_docs_are_served_without_a_user(anonymous_client):
    schema = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = anonymous_client.get("/api/docs/")

    assert schema.status_code == 200
    assert "/api/conditions/register" in json.loads(schema.content)["paths"]
    assert docs.status_code == 200


def test_a_body_over_the_size_limit_answers_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {
        **RSI_ALERT,
        "name": "x",
        "conditionConfig": {"conditions": [], "padding": "y" * 20_000},
    }

    response = client.post("/api/alerts/", body, format="json")

    assert response.status_code == 413
    assert "limit" in errors_of(response)[None]
    assert not Alert.objects.exists()


@pytest.mark.parametrize(
    ("raw_body", "reason"),
    [
        ('{"symbol": "ETHBTC", "base_timeframe": ', "truncated"),
        ("[" * 5000 + "]" * 5000, "nested beyond the parser"),
        ('{"symbol": NaN}', "not JSON"),
    ],
)
def test_a_body_that_is_not_json_answers_400(client, raw_body, reason):
    response = client.post("/api/alerts/", raw_body, content_type="application/json")

    assert response.status_code == 400, reason
    assert "JSON parse error" in errors_of(response)[None]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (
            '{"conditions": [{"indicator": "RSI", "operator": "<", "value": 30, "label": "a\\u0000b"}]}',
            "conditionConfig.conditions.0.label",
        ),
        (
            '{"conditions": [{"indicator": "RSI", "operator": "<", "value": 1e400}]}',
            "conditionConfig",
        ),
        (
            '{"conditions": [], "deep": ' + "[" * 20 + "]" * 20 + "}",
            "conditionConfig.deep" + ".0" * 12,
        ),
    ],
)
def test_json_the_database_cannot_store_answers_400_naming_where(client, config, field):
    body = f'{{"symbol": "ETHBTC", "base_timeframe": "5m", "conditionConfig": {config}}}'

    response = client.post("/api/alerts/", body, content_type="application/json")

    assert response.status_code == 400
    assert field in errors_of(response)
    assert not Alert.objects.exists()


def test_pages_are_capped_at_the_maximum_limit(client, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "PAGE_SIZE_MAX": 3}
    AlertFactory.create_batch(5, user=user)

    page = client.get("/api/alerts/?limit=1000").json()

    assert (page["count"], len(page["results"])) == (5, 3)
    assert page["next"] is not None


def test_an_offset_past_the_end_is_an_empty_page(client, user):
    AlertFactory(user=user)

    page = client.get("/api/alerts/?offset=1000000000000000000000000").json()

    assert (page["count"], page["results"]) == (1, [])


def test_previews_are_throttled_per_user_with_retry_after(client, intruder_client, settings):
    rate = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["preview"].split("/")[0])
    # Bodies that fail validation still count: the throttle runs first.
    for _ in range(rate):
        assert client.post("/api/alerts/preview", {}, format="json").status_code == 400

    throttled = client.post("/api/alerts/preview", {}, format="json")

    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "throttled" in errors_of(throttled)[None].lower()
    assert intruder_client.post("/api/alerts/preview", {}, format="json").status_code == 400
    assert client.post("/api/conditions/register", {}, format="json").status_code == 400


def test_the_token_endpoint_is_throttled_per_address(anonymous_client, settings):
    rate = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["auth"].split("/")[0])
    guess = {"username": "ada", "password": "guess"}
    for _ in range(rate):
        anonymous_client.post(reverse("api-token"), guess, format="json")

    response = anonymous_client.post(reverse("api-token"), guess, format="json")

    assert response.status_code == 429


def test_an_unknown_api_path_answers_404_in_the_error_shape(client, anonymous_client):
    known_user = client.get("/api/alerts/not-an-id/")
    unknown_path = client.post("/api/no-such-thing", {}, format="json")

    assert known_user.status_code == unknown_path.status_code == 404
    assert None in errors_of(known_user) and None in errors_of(unknown_path)
    assert anonymous_client.get("/api/no-such-thing").status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/alerts"), ("get", "/api/alerts"), ("get", "/api/webhook-secret/")],
)
def test_each_route_answers_with_and_without_its_trailing_slash(client, method, path):
    response = getattr(client, method)(path, RSI_ALERT, format="json")

    assert response.status_code in (200, 201), response.content
