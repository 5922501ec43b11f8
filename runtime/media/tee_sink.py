"""A sink that writes each frame to several sinks."""

from __future__ import annotations

from typing import Optional

from .base import Sink


class TeeSink:
    """Writes each frame to every one of `sinks`, in order (the virtual camera, then the preview ...)."""

    def __init__(self, *sinks: Sink):
        self.sinks = sinks

    def write(self, image, timestamp: Optional[float] = None):
        for sink in self.sinks:
            sink.write(image, timestamp)

    def close(self):
        for sink in self.sinks:
            sink.close()

    def abort(self):
        for sink in self.sinks:
            sink.abort()
