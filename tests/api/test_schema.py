"""The OpenAPI schema: valid, and true to what the API answers."""

from __future__ import annotations

from decimal import Decimal

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import (
    AlertFactory,
    BotFactory,
    DealFactory,
    ExchangeAccountFactory,
    NotificationFactory,
    OrderFactory,
    SubscriptionFactory,
)
from tradeeon.wsgi import application

# Random cases per operation, on top of the coverage phase's boundary and
# negative cases (about 2,000 in all; the count is printed at the end of the run).
CASES_PER_OPERATION = 5


def test_the_schema_validates_without_a_warning(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "api.yaml")
    )


# Loaded through the WSGI app at collection (no database needed for the schema).
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@pytest.fixture
def in_test_transaction():
    """Called as a WSGI app, Django closes the database connection around each
    request, which inside the test's transaction loses it; the test client
    disconnects these signals the same way."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def own_ids(user) -> dict[str, dict[str, object]]:
    """Path parameters naming objects of the authenticated user, by path prefix,
    so that half the generated cases reach an object instead of a 404."""
    bot = BotFactory(user=user)
    deal = DealFactory(bot=bot, state="open", base_bought=Decimal("1"), quote_spent=Decimal("10"))
    alert = AlertFactory(user=user)
    subscription = SubscriptionFactory(bot=bot)
    return {
        "/api/alerts/": {"id": alert.pk},
        "/api/bots/": {"id": bot.pk},
        "/api/deals/": {"id": deal.pk},
        "/api/orders/": {"id": OrderFactory(deal=deal).pk},
        "/api/exchange-accounts/": {"id": ExchangeAccountFactory(user=user).pk},
        "/api/notifications/": {"id": NotificationFactory(trigger__alert=alert).pk},
        "/api/conditions/subscribe/": {"subscription_id": subscription.pk},
        "/api/conditions/{": {"condition_id": subscription.condition_id},
    }


def aim_at_own_objects(case, own_ids: dict, nth: int) -> None:
    # Only valid requests: a negative case must stay what it was generated as.
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if not case.path_parameters or not positive or nth % 2:
        return
    for prefix, ids in own_ids.items():
        if case.path.startswith(prefix):
            # As on the wire: a path parameter is text.
            case.path_parameters = {
                **case.path_parameters,
                **{name: str(value) for name, value in ids.items()},
            }
            return


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=CASES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_generated_request_gets_a_5xx_or_an_answer_the_schema_does_not_describe(
    case, user, own_ids, in_test_transaction, fuzz_tally
):
    token, _ = Token.objects.get_or_create(user=user)
    fuzz_tally[case.operation.label] += 1
    aim_at_own_objects(case, own_ids, fuzz_tally[case.operation.label])
    # A 400 for a body the schema allows is no contradiction: the schema cannot
    # say which indicators exist, so that check (positive_data_acceptance) is off.
    case.call_and_validate(
        headers={"Authorization": f"Token {token.key}"},
        excluded_checks=[positive_data_acceptance],
    )
