"""kombu's filesystem transport, with messages that appear only once complete.

kombu's ``Channel._put`` creates ``<ts>_<uuid>.<queue>.msg`` and only then
writes to it, while ``_get`` moves any such file away without taking its
lock, so a reader can take a message that is still empty, fail to decode it
and lose it. Here the payload is written to a hidden temporary file that
``_get`` never matches and renamed into place (atomic on one filesystem).

Settings select it for the embedded ``filesystem://`` broker with
``CELERY_BROKER_TRANSPORT = "tradeeon.broker:Transport"``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """Filesystem channel whose ``_put`` publishes each message atomically."""

    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: ``name.partition('.')[2]`` is then never ``<queue>.msg``.
        partial = os.path.join(self.data_folder_out, f".{name}.tmp")
        try:
            with open(partial, "wb") as f:
                f.write(dumps(payload).encode())
                f.flush()
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """Filesystem transport using :class:`Channel`."""

    Channel = Channel
