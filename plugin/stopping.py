"""How SIGTERM and SIGHUP stop a command: raised in the main thread like Ctrl+C, so every cleanup path runs."""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived (timeout, docker stop, systemd, a closed terminal). Raised in the main thread
    like KeyboardInterrupt, and like it not an Exception, so every cleanup path runs and nothing swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise():
    """SIGTERM and SIGHUP raise Terminated while a command runs (main thread only: signal handlers live
    there); a second signal during the cleanup is ignored so the cleanup finishes. The old handlers come back."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def handler(signum, frame):
        if not stopping:
            stopping.append(signum)
            raise Terminated(signum)

    previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
    try:
        yield
    finally:
        for name, old in previous.items():
            if old is not None:  # None: set outside Python, cannot be put back
                signal.signal(getattr(signal, name), old)
