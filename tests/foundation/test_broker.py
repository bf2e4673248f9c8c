"""The embedded broker: a reader never sees a message before it is complete."""

from __future__ import annotations

import json
import threading
from queue import Empty
from time import monotonic

from kombu import Connection

from tests.foundation.test_settings import run_settings
from tradeeon.broker import Transport

# Big enough that writing one takes a while: kombu's own transport then loses
# one of these to its reader in practically every run.
MESSAGES, BODY = 300, "x" * 65536
PROBE = """
import json, django
from tradeeon.celery import app
django.setup()
with app.connection_for_write() as conn:
    print(json.dumps({
        "transport": f"{type(conn.transport).__module__}:{type(conn.transport).__name__}",
        "folder": conn.default_channel.data_folder_in,
    }))
"""


def exchange(transport, folder, count=MESSAGES, timeout=60.0):
    """Put `count` messages from one thread while another gets them from the
    same folder; return what the reader received and any error it raised."""
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    received, errors = [], []
    done = threading.Event()

    def write():
        with Connection(transport=transport, transport_options=options) as conn:
            channel = conn.channel()
            for number in range(count):
                channel._put("q", {"number": number, "body": BODY})
        done.set()

    def read():
        with Connection(transport=transport, transport_options=options) as conn:
            channel = conn.channel()
            deadline = monotonic() + timeout
            while len(received) < count and monotonic() < deadline:
                try:
                    received.append(channel._get("q")["number"])
                except Empty:
                    if done.is_set() and not any(folder.iterdir()):
                        return
                except Exception as exc:  # JSONDecodeError, ChannelError...
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return received, errors


def test_a_concurrent_reader_gets_every_message_once_and_whole(tmp_path):
    received, errors = exchange(Transport, tmp_path)
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert list(tmp_path.iterdir()) == []


def test_the_embedded_broker_uses_this_transport(tmp_path):
    result = run_settings({}, tmp_path, probe=PROBE)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values == {
        "transport": "tradeeon.broker:Transport",
        "folder": str(tmp_path / "var" / "broker" / "queue"),
    }
