"""Frames already in memory, played as a source."""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

from .base import MediaError, SourceFrame


class MemorySource:
    """Frames already in memory (synthetic frames, a clip decoded beforehand) played in a loop at `fps`, `total`
    frames in all (default: each once). Each frame comes out as a copy of its own, as a decoder's does."""

    live = False
    device = None

    def __init__(self, frames, fps: float = 30.0, total: Optional[int] = None):
        self.frames = list(frames)
        if not self.frames:
            raise MediaError("no frames to play")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.height, self.width = self.frames[0].shape[:2]
        self.frame_count = len(self.frames) if total is None else int(total)

    def __iter__(self):
        for index in range(self.frame_count):
            yield SourceFrame(self.frames[index % len(self.frames)].copy(), index / float(self.fps), index)

    def close(self):
        """Nothing to release."""
