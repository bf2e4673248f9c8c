"""Signed webhooks to a receiver on 127.0.0.1: signature, retries with
backoff, timeouts, and the addresses Tradeeon refuses to call."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from alerts import dispatch, evaluation, tasks
from alerts.models import AlertTrigger, WebhookDelivery, WebhookSecret
from alerts.webhooks import EVENT_HEADER, SIGNATURE_HEADER
from tests.factories import AlertTriggerFactory, RegisteredAlertFactory
from tests.pipeline.conftest import bar

pytestmark = pytest.mark.django_db


def webhook_trigger(url: str) -> AlertTrigger:
    return AlertTriggerFactory(
        alert=RegisteredAlertFactory(action={"type": "webhook", "url": url}),
        snapshot={"close": 0.1, "bar_closed": True, "values": {}},
    )


def deliveries(trigger: AlertTrigger) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(trigger=trigger).order_by("attempt"))


def test_a_trigger_is_posted_with_an_hmac_sha256_signature_of_the_exact_body(
    live, receiver, django_capture_on_commit_callbacks
):
    alert = RegisteredAlertFactory(action={"type": "webhook", "url": receiver.url})

    with django_capture_on_commit_callbacks(execute=True):
        evaluation.evaluate_symbol("ETHBTC", "5m")

    [request] = receiver.requests
    trigger = AlertTrigger.objects.get(alert=alert)
    secret = WebhookSecret.objects.get(user=alert.user).secret
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    assert request.headers[EVENT_HEADER] == f"alert_trigger:{trigger.pk}"
    assert request.headers["Content-Type"] == "application/json"
    payload = request.payload
    assert payload["event_id"] == f"alert_trigger:{trigger.pk}"
    assert payload["alert"] == {
        "id": alert.pk,
        "name": alert.name,
        "symbol": "ETHBTC",
        "timeframe": "5m",
    }
    assert payload["bar_open_time"] == trigger.bar_open_time.isoformat()
    assert int(trigger.bar_open_time.timestamp() * 1000) == bar(-1)
    assert deliveries(trigger)[0].outcome == "delivered"


def test_a_failing_receiver_is_retried_with_growing_delays_and_every_attempt_is_a_row(
    live, receiver, settings
):
    settings.WEBHOOK_RETRY_BASE_S = 2
    receiver.answers = [500, 503, 200]
    trigger = webhook_trigger(receiver.url)

    # Celery runs the retries at once in this process; their countdowns are
    # what the rows record (a real worker waits them out: see test_workers).
    tasks.deliver_webhook(trigger.pk, 1)

    rows = deliveries(trigger)
    assert [(r.attempt, r.status_code, r.outcome) for r in rows] == [
        (1, 500, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "delivered"),
    ]
    delays = [(r.next_retry_at - r.created_at).total_seconds() for r in rows[:2]]
    assert delays == [pytest.approx(2, abs=0.5), pytest.approx(4, abs=0.5)]
    assert rows[2].next_retry_at is None
    assert receiver.count() == 3
    assert len({r.headers[EVENT_HEADER] for r in receiver.requests}) == 1


def test_retries_stop_after_the_last_attempt_and_a_client_error_is_not_retried(
    live, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    receiver.answers = [500, 500, 500, 500]
    failing = webhook_trigger(receiver.url)
    tasks.deliver_webhook(failing.pk, 1)
    assert [(r.attempt, r.outcome) for r in deliveries(failing)] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "failed"),
    ]

    receiver.answers = [404]
    gone = webhook_trigger(receiver.url)
    tasks.deliver_webhook(gone.pk, 1)
    assert [(r.attempt, r.status_code, r.outcome) for r in deliveries(gone)] == [(1, 404, "failed")]


def test_a_receiver_that_never_answers_is_cut_at_the_timeout(live, receiver, settings):
    settings.WEBHOOK_TIMEOUT_S = 0.5
    receiver.answers = [("hang", 10)]
    trigger = webhook_trigger(receiver.url)

    started = time.monotonic()
    next_in = dispatch.deliver_webhook(trigger.pk, 1)
    elapsed = time.monotonic() - started

    assert elapsed < 2
    assert next_in == settings.WEBHOOK_RETRY_BASE_S
    [row] = deliveries(trigger)
    assert row.outcome == "retrying"
    assert row.status_code is None
    assert "no answer within 0.5 s" in row.error


def test_a_receiver_that_answers_then_trickles_its_body_is_cut_at_the_timeout_too(
    live, receiver, settings
):
    settings.WEBHOOK_TIMEOUT_S = 0.5
    receiver.answers = [("trickle", 10)]
    trigger = webhook_trigger(receiver.url)

    started = time.monotonic()
    next_in = dispatch.deliver_webhook(trigger.pk, 1)

    assert time.monotonic() - started < 2
    assert next_in is None
    [row] = deliveries(trigger)
    assert (row.status_code, row.outcome) == (200, "delivered")
    assert row.response_excerpt.startswith(".")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hooks/tradeeon",
        "http://localhost:{port}/hooks/tradeeon",
        "http://[::1]:{port}/hooks/tradeeon",
        "http://10.0.0.7/hooks/tradeeon",
        "http://192.168.1.20/hooks/tradeeon",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/hooks/tradeeon",
    ],
)
def test_urls_that_resolve_to_loopback_private_or_link_local_addresses_are_refused(
    live, receiver, settings, url
):
    settings.WEBHOOK_ALLOWED_PRIVATE_HOSTS = []
    port = receiver.server.server_address[1]
    trigger = webhook_trigger(url.format(port=port))

    next_in = dispatch.deliver_webhook(trigger.pk, 1)

    [row] = deliveries(trigger)
    assert row.outcome == "refused"
    assert row.status_code is None
    assert "resolves to a" in row.error
    assert next_in is None, "a refused URL was scheduled for a retry"
    assert receiver.count() == 0
