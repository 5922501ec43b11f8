"""A live source that rides out its camera's faults: a hung or unplugged camera is reopened."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

from ..frames.mailbox import LatestSlot
from .base import CameraUnavailable, SourceFrame, one_line


class SteadyCamera:
    """A live source that rides out its camera's faults instead of ending the call's video.

    The camera (any live source; `camera`, else `open_camera()`) is read on a thread of its own, so a
    read that hangs (a driver stuck after a USB hiccup) does not hold up the caller. When no frame
    comes for `stall_s`, or the reads fail (an unplugged cable), it says so through `notify`, leaves the
    old camera to its thread and calls `open_camera()` again, every `retry_interval_s`, until frames
    come back; after `retry_s` without one it raises CameraUnavailable. Meanwhile no frame comes out,
    and run_live repeats the last one, so the virtual camera keeps its rate. Frame times are counted
    from the first frame on this object's clock, so they keep increasing across reopenings.
    """

    live = True

    def __init__(self, open_camera, camera=None, stall_s: float = 2.0, retry_s: float = 30.0,
                 retry_interval_s: float = 0.5, notify=None):
        self._open_camera = open_camera
        self.stall_s, self.retry_s, self.retry_interval_s = float(stall_s), float(retry_s), float(retry_interval_s)
        self._notify = notify if notify is not None else (lambda message: None)
        self._camera = camera if camera is not None else open_camera()
        self.device = self._camera.device
        self.width, self.height, self.fps = self._camera.width, self._camera.height, self._camera.fps
        self.frame_count = 0  # unbounded
        self._latest = LatestSlot()  # the newest frame, or the error that ended the reads
        self._reader = None
        self._closed = threading.Event()
        self._start = None
        self._index = 0
        self._failing_since = None  # when the current fault began; None while frames come
        self._generation = 0  # a new iteration (run_live after the passthrough) retires the older one

    def _name(self) -> str:
        return f"camera {self.device!r}" if self.device is not None else "the camera"

    def _start_reader(self):
        camera = self._camera

        def read():
            try:
                for item in camera:
                    if self._closed.is_set() or self._camera is not camera:
                        return  # closed, or given up on while this read hung
                    self._latest.put(item.image)
                if self._camera is camera:
                    self._latest.put(CameraUnavailable(f"{self._name()} ended its stream"))
            except Exception as error:  # handed to the consumer, which reopens the camera
                if self._camera is camera:
                    self._latest.put(error)
            finally:
                with contextlib.suppress(Exception):
                    camera.close()

        self._reader = threading.Thread(target=read, name="instantrestore-camera", daemon=True)
        self._reader.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed.is_set()

    def _reopen(self, why: str, generation: int):
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._notify(f"{why}; reopening it (for up to {self.retry_s:g} s; the virtual camera repeats the last "
                         "frame meanwhile)")
        else:  # it opened but failed again: not every retry is worth a line
            self._closed.wait(self.retry_interval_s)
        self._camera = None  # a hung reader closes its camera once its read returns
        while self._current(generation):
            try:
                self._camera = self._open_camera()
                self._start_reader()
                return
            except Exception as error:  # not back yet (unplugged, or still held by the hung read)
                why = one_line(error)
            if time.monotonic() - self._failing_since >= self.retry_s:
                raise CameraUnavailable(f"{self._name()} is gone: no frames for {self.retry_s:g} s ({why})")
            self._closed.wait(self.retry_interval_s)

    def __iter__(self):
        self._generation += 1
        generation = self._generation
        if self._reader is None:
            self._start_reader()
        while self._current(generation):
            try:
                item = self._latest.get(timeout=self.stall_s)
            except queue.Empty:
                self._reopen(f"{self._name()} has sent no frame for {self.stall_s:g} s", generation)
                continue
            if isinstance(item, BaseException):
                self._reopen(f"reading {self._name()} failed ({one_line(item)})", generation)
                continue
            if self._failing_since is not None:
                self._notify(f"{self._name()} is back after {time.monotonic() - self._failing_since:.1f} s")
                self._failing_since = None
            now = time.monotonic()
            self._start = now if self._start is None else self._start
            yield SourceFrame(item, now - self._start, self._index)
            self._index += 1

    def close(self):
        self._closed.set()
        reader, camera = self._reader, self._camera
        if reader is None:
            if camera is not None:
                camera.close()
        else:  # its reader closes the camera after the read in progress, unless that read hangs
            reader.join(timeout=1.0)
