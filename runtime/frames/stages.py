"""The stage-thread helper of both runners: stages on threads of their own or the caller's, the first error wins
and stops the others, and bounded hand-offs between them that give up once the run stops."""

from __future__ import annotations

import queue
import threading
from typing import Optional

END = object()  # put into a hand-off after a stage's last item


class Stopped(Exception):
    """Another stage of the run failed or was interrupted."""


class Stages:
    """The stages of one run, each on a thread of its own or on the caller's: the first error wins, sets `stop` so
    the other stages end, and is what raise_first() raises. A stage that sees the run stopped ends quietly
    (raising Stopped, as its hand-offs do, or returning)."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def _guarded(self, body):
        try:
            body()
        except Stopped:
            pass
        except BaseException as error:  # handed to the caller, which stops the other stages
            self.errors.append(error)
            self.stop.set()

    def start(self, body, name: str) -> None:
        """Run body() on a thread of its own."""
        thread = threading.Thread(target=self._guarded, args=(body,), name=f"instantrestore-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def run(self, body) -> None:
        """Run body() on this thread, as one of the stages."""
        self._guarded(body)

    def join(self, timeout: Optional[float] = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


class Handoff:
    """A small bounded queue between two stages; waiting gives up (raises Stopped) once the run stops."""

    def __init__(self, stop: threading.Event, size: int = 2):
        self._queue = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item):
        while not self._stop.is_set():
            try:
                return self._queue.put(item, timeout=0.05)
            except queue.Full:
                pass
        raise Stopped

    def get(self):
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        raise Stopped
