"""Signed webhook delivery.

The body is compact JSON; `X-Tradeeon-Signature: sha256=<hex>` is
HMAC-SHA256 of the exact body bytes with the user's webhook secret, and the
body carries its own timestamp and event id so a receiver can refuse replays
and drop duplicates. Hosts that resolve to loopback, private, link-local or
otherwise non-public addresses are refused unless WEBHOOK_ALLOWED_PRIVATE_HOSTS
names them; redirects are not followed (they could lead there). The POST
connects to the addresses that were checked, not to the name again: a name
whose next answer is a private address (DNS rebinding) cannot lead there
either. TLS still verifies the certificate for the URL's host name, and the
request carries that name as its Host. Webhooks go out directly, never
through a proxy (a proxy would resolve the name itself).
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import certifi
import urllib3
from django.conf import settings
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

SIGNATURE_HEADER = "X-Tradeeon-Signature"
EVENT_HEADER = "X-Tradeeon-Event"
EXCERPT_BYTES = 500


class WebhookURLRefused(ValueError):
    """A webhook URL Tradeeon will not call; the message says why."""


def check_webhook_url(url: str, *, resolve: bool = True) -> list[str]:
    """Refuses (WebhookURLRefused) what Tradeeon will not call. Returns the
    addresses the host resolved to, all of them checked, for `post` to
    connect to; none for a host WEBHOOK_ALLOWED_PRIVATE_HOSTS names, or
    without `resolve` (the API's check of a URL being saved)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookURLRefused("only http and https URLs are accepted")
    host = parts.hostname
    if not host:
        raise WebhookURLRefused("the URL has no host")
    if parts.username or parts.password:
        raise WebhookURLRefused("credentials in the URL are not accepted")
    if host in settings.WEBHOOK_ALLOWED_PRIVATE_HOSTS or not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, _port(parts), proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise WebhookURLRefused(f"the host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if not address.is_global or address.is_multicast:
            kind = (
                "loopback"
                if address.is_loopback
                else "link-local"
                if address.is_link_local
                else "private"
            )
            raise WebhookURLRefused(f"the host {host!r} resolves to a {kind} address ({address})")
    return addresses


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


def post(
    url: str, body: bytes, secret: str, event_id: str, addresses: Sequence[str] = ()
) -> Attempt:
    """One POST of `body`, connecting to `addresses` in turn until one takes
    the connection (by the URL's host name when there are none). Neither
    retried nor redirected; cut at WEBHOOK_TIMEOUT_S, the answer's body too."""
    parts = urlsplit(url)
    try:
        host = _ascii_host(parts)
    except UnicodeError:
        return Attempt(None, "", f"the host {parts.hostname!r} is not a valid name")
    headers = {
        "Host": f"{host}:{parts.port}" if parts.port else host,
        "Content-Type": "application/json",
        "User-Agent": "Tradeeon-Webhooks/1",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event_id,
    }
    timeout_s = settings.WEBHOOK_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    refused: NewConnectionError | None = None
    for address in addresses or [host.strip("[]")]:
        if time.monotonic() >= deadline:
            break
        with _pool(parts, address, host) as pool:
            try:
                # Streamed: the status is the answer, and a body that never
                # ends (or trickles in byte by byte, each byte renewing the
                # read timeout) must not hold the worker past the timeout.
                response = pool.urlopen(
                    "POST",
                    target,
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                )
            except NewConnectionError as exc:  # refused or unreachable: the next address
                refused = exc
                continue
            except ConnectTimeoutError:  # this one is silent: so may the next be
                refused = None
                continue
            except urllib3.exceptions.TimeoutError:
                return Attempt(None, "", f"no answer within {timeout_s:g} s")
            except HTTPError as exc:
                return _failed(exc)
            try:
                return Attempt(response.status, _excerpt(response, deadline), "")
            finally:
                response.release_conn()
    if refused is not None:
        return _failed(refused)
    return Attempt(None, "", f"no answer within {timeout_s:g} s")


def _failed(exc: Exception) -> Attempt:
    return Attempt(None, "", f"{type(exc).__name__}: {str(exc)[:300]}")


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _ascii_host(parts: SplitResult) -> str:
    """The URL's host as it goes on the wire: an international name in its
    IDNA (punycode) form, as certificates name it; an IPv6 address bracketed."""
    host = parts.hostname or ""
    if ":" in host:
        return f"[{host}]"
    return host.encode("idna").decode("ascii")


def _pool(parts: SplitResult, address: str, host: str) -> urllib3.HTTPConnectionPool:
    if parts.scheme == "https":
        name = host.strip("[]")
        return urllib3.HTTPSConnectionPool(
            address,
            _port(parts),
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
            server_hostname=name,
            assert_hostname=name,
        )
    return urllib3.HTTPConnectionPool(address, _port(parts), maxsize=1)


def _ca_bundle() -> str:
    """The certificates a receiver's must chain to: the bundle named by
    REQUESTS_CA_BUNDLE or SSL_CERT_FILE, as requests would take it, else certifi's."""
    return (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()
    )


def _excerpt(
    response: urllib3.BaseHTTPResponse, deadline: float, limit: int = EXCERPT_BYTES
) -> str:
    """The start of the answer's body, as much as arrives before the deadline."""
    data = b""
    try:
        while len(data) < limit and time.monotonic() < deadline:
            chunk = response.read1(limit - len(data))
            if not chunk:
                break
            data += chunk
    except (HTTPError, OSError):
        pass  # the status has arrived; what follows it is only kept for the record
    return data.decode(_charset(response.headers.get("Content-Type", "")), "replace")


def _charset(content_type: str) -> str:
    match = re.search(r"charset=\"?([\w.:-]+)", content_type, re.IGNORECASE)
    try:
        return codecs.lookup(match.group(1)).name if match else "utf-8"
    except LookupError:
        return "utf-8"
