"""Signed webhook delivery.

The body is compact JSON; `X-Tradeeon-Signature: sha256=<hex>` is
HMAC-SHA256 of the exact body bytes with the user's webhook secret, and the
body carries its own timestamp and event id so a receiver can refuse replays
and drop duplicates. Hosts that resolve to loopback, private, link-local or
otherwise non-public addresses are refused unless WEBHOOK_ALLOWED_PRIVATE_HOSTS
names them; redirects are not followed (they could lead there).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings

SIGNATURE_HEADER = "X-Tradeeon-Signature"
EVENT_HEADER = "X-Tradeeon-Event"
EXCERPT_BYTES = 500


class WebhookURLRefused(ValueError):
    """A webhook URL Tradeeon will not call; the message says why."""


def check_webhook_url(url: str, *, resolve: bool = True) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookURLRefused("only http and https URLs are accepted")
    host = parts.hostname
    if not host:
        raise WebhookURLRefused("the URL has no host")
    if parts.username or parts.password:
        raise WebhookURLRefused("credentials in the URL are not accepted")
    if host in settings.WEBHOOK_ALLOWED_PRIVATE_HOSTS:
        return
    if not resolve:
        return
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise WebhookURLRefused(f"the host {host!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            kind = (
                "loopback"
                if address.is_loopback
                else "link-local"
                if address.is_link_local
                else "private"
            )
            raise WebhookURLRefused(f"the host {host!r} resolves to a {kind} address ({address})")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    excerpt: str
    error: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        # Client errors will not heal by themselves, except these two.
        if self.status_code is None:
            return True
        return self.status_code >= 500 or self.status_code in (408, 429)


def post(url: str, body: bytes, secret: str, event_id: str) -> Attempt:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tradeeon-Webhooks/1",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event_id,
    }
    deadline = time.monotonic() + settings.WEBHOOK_TIMEOUT_S
    try:
        # Streamed: the status is the answer, and a body that never ends (or
        # trickles in byte by byte, each byte renewing the read timeout) must
        # not hold the worker past the timeout.
        response = requests.post(
            url,
            data=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_S,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        return Attempt(None, "", f"no answer within {settings.WEBHOOK_TIMEOUT_S:g} s")
    except requests.RequestException as exc:
        return Attempt(None, "", f"{type(exc).__name__}: {str(exc)[:300]}")
    with response:
        return Attempt(response.status_code, _excerpt(response, deadline), "")


def _excerpt(response: requests.Response, deadline: float, limit: int = EXCERPT_BYTES) -> str:
    """The start of the answer's body, as much as arrives before the deadline."""
    data = b""
    try:
        while len(data) < limit and time.monotonic() < deadline:
            chunk = response.raw.read1(limit - len(data))
            if not chunk:
                break
            data += chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        pass  # the status has arrived; what follows it is only kept for the record
    return data.decode(response.encoding or "utf-8", "replace")
