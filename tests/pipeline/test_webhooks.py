"""Signed webhooks to a receiver on 127.0.0.1: signature, retries with
backoff, timeouts, the addresses Tradeeon refuses to call, and the POST going
to the addresses checked, not to another answer for the same name."""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
import trustme

from alerts import dispatch, evaluation, tasks
from alerts.models import AlertTrigger, WebhookDelivery, WebhookSecret
from alerts.webhooks import EVENT_HEADER, SIGNATURE_HEADER, check_webhook_url, post
from tests.factories import AlertTriggerFactory, RegisteredAlertFactory
from tests.pipeline.conftest import WebhookReceiver, _ReceiverHandler, bar

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


# --- the connection goes where the check looked -------------------------------------


def test_the_addresses_checked_are_returned_for_the_post():
    assert check_webhook_url("https://8.8.8.8/hooks") == ["8.8.8.8"]
    assert check_webhook_url("https://[2606:4700::1111]:8443/hooks") == ["2606:4700::1111"]
    assert check_webhook_url("https://hooks.example/x", resolve=False) == []


def test_the_post_connects_to_the_address_checked_not_to_a_new_lookup_of_the_name(receiver):
    # `.invalid` never resolves: only the address given can have been used
    port = receiver.server.server_address[1]
    url = f"http://hooks.invalid:{port}/hooks/tradeeon?user=7"

    attempt = post(url, b"{}", "secret", "event-1", ["127.0.0.1"])

    assert (attempt.status_code, attempt.delivered) == (200, True)
    [request] = receiver.requests
    assert request.headers["Host"] == f"hooks.invalid:{port}"
    assert request.path == "/hooks/tradeeon?user=7"
    # by name, as for an allowed private host, it does not resolve
    assert post(url, b"{}", "secret", "event-1").status_code is None
    assert receiver.count() == 1


def test_an_address_that_refuses_the_connection_is_passed_over_for_the_next(receiver):
    port = receiver.server.server_address[1]
    url = f"http://hooks.invalid:{port}/hooks/tradeeon"

    assert post(url, b"{}", "secret", "event-1", ["::1", "127.0.0.1"]).delivered
    refused = post(url, b"{}", "secret", "event-2", ["::1"])

    assert refused.status_code is None and refused.retryable
    assert refused.error.startswith("NewConnectionError")
    assert [r.headers[EVENT_HEADER] for r in receiver.requests] == ["event-1"]


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch) -> Iterator[WebhookReceiver]:
    """A receiver on 127.0.0.1 over TLS, with a certificate for hooks.test
    from a CA of its own, which REQUESTS_CA_BUNDLE names."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    receiver = WebhookReceiver()
    handler = type("Handler", (_ReceiverHandler,), {"receiver": receiver})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # a refused handshake
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_over_tls_the_certificate_is_verified_for_the_urls_name_at_the_address_checked(
    tls_receiver,
):
    port = tls_receiver.server.server_address[1]

    delivered = post(f"https://hooks.test:{port}/in", b"{}", "secret", "e1", ["127.0.0.1"])
    wrong_name = post(f"https://other.test:{port}/in", b"{}", "secret", "e2", ["127.0.0.1"])

    assert (delivered.status_code, delivered.delivered) == (200, True)
    assert tls_receiver.requests[0].headers["Host"] == f"hooks.test:{port}"
    assert wrong_name.status_code is None and wrong_name.retryable
    assert wrong_name.error == "SSLError: hostname 'other.test' doesn't match 'hooks.test'"
    assert tls_receiver.count() == 1


def test_an_international_host_name_goes_out_in_its_idna_form(receiver):
    port = receiver.server.server_address[1]

    attempt = post(f"http://bücher.invalid:{port}/hook", b"{}", "secret", "e1", ["127.0.0.1"])

    assert attempt.delivered
    assert receiver.requests[0].headers["Host"] == f"xn--bcher-kva.invalid:{port}"
