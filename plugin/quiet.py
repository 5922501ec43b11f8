"""Keep the native libraries' log chatter (MediaPipe/LiteRT, glog, OpenCV) off the user's terminal.

Those libraries write straight to file descriptor 2, below Python. While the CLI runs, fd 2 is a
pipe read by a thread that drops their log lines and forwards everything else; Python's own
sys.stderr writes to a copy of the real stderr, unfiltered, so progress bars stay live.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading

# Line starts of library logs: "INFO: [env.cc:36] ...", "W0000 00:00:... file.cc:12] ...",
# "WARNING: Logging before InitGoogle() ...", LiteRT's "WARNING: [model_load.cc:402] Sparsity tensors ..." (once
# per frame for the full-range face detector's sparse model), "[ WARN:0@1.2] ...", OpenCV exception dumps.
NOISE = re.compile(
    rb"^(INFO: |WARNING: (Logging before InitGoogle|\[[\w.]+\.cc:\d+\] )|[IWE]\d{4} \d\d:\d\d:|\[ ?(WARN|INFO|ERROR):"
    rb"|OpenCV\(|> |\s*$)"
)


def _pump(read_fd: int, out_fd: int) -> None:
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            try:
                chunk = pipe.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not NOISE.match(line):
                    _write_all(out_fd, line + b"\n")
    if pending and not NOISE.match(pending):
        _write_all(out_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


@contextlib.contextmanager
def filtered_native_stderr(enabled: bool = True):
    """Filter native log lines on fd 2 for the duration; a no-op when stderr is not the process's
    real fd 2 (tests capturing output, embedded use)."""
    try:
        usable = enabled and sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        usable = False
    if not usable:
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, real), name="instantrestore-stderr", daemon=True)
    pump.start()
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(real), "w"), encoding=python_stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
            sys.stderr.close()
        finally:
            sys.stderr = python_stderr
            os.dup2(real, 2)  # closes the pipe's last write end: the pump sees EOF and drains
            pump.join(timeout=2.0)
            os.close(real)
