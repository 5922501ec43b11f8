"""The one "latest wins" mailbox: live mode's hand-offs and the steady camera's reader use it."""

from __future__ import annotations

import queue

Empty = queue.Empty  # what get() raises when nothing came in time


class LatestSlot:
    """A one-item mailbox: putting replaces an unread item (which the caller may count as dropped)."""

    def __init__(self):
        self._queue = queue.Queue(maxsize=1)

    def put(self, item) -> bool:
        """Returns True when an unread item was replaced."""
        replaced = False
        while True:
            try:
                self._queue.put_nowait(item)
                return replaced
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    replaced = True
                except queue.Empty:
                    pass

    def get(self, timeout: float):
        """The item, waiting up to timeout seconds (0: not at all); raises Empty when none came."""
        if timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def empty(self) -> bool:
        return self._queue.empty()
