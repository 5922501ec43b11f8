"""An OpenCV window showing the output (`camera --preview`)."""

from __future__ import annotations

import os
import sys
from typing import Optional

import numpy as np

from .base import MediaError
from .registry import register_sink


def display_problem() -> Optional[str]:
    """Why no window can open here, or None. On Linux a window needs an X11 or Wayland display, and
    OpenCV's Qt aborts the whole process (signal 6) when it finds none; Windows and macOS have a desktop."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


class PreviewClosed(Exception):
    """The user closed the preview window: the camera run stops as on Ctrl+C."""


class PreviewSink:
    """An OpenCV window showing the output (optional; needs a desktop). Closing it with q or Esc raises
    PreviewClosed from write(). overlay(image) -> image draws on what the window shows (the --stats line).
    Without a display it raises MediaError, before any window is tried."""

    def __init__(self, title: str = "InstantRestore preview", overlay=None):
        problem = display_problem()
        if problem:
            raise MediaError(problem)
        self.title = title
        self.overlay = overlay
        self.frames_written = 0

    def write(self, image, timestamp: Optional[float] = None):
        import cv2

        shown = image if self.overlay is None else self.overlay(image)
        cv2.imshow(self.title, cv2.cvtColor(np.asarray(shown), cv2.COLOR_RGB2BGR))
        self.frames_written += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise PreviewClosed()

    def close(self):
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass

    abort = close


register_sink("preview", lambda spec: spec == "preview",
              lambda spec, title="InstantRestore preview", overlay=None, **ignored: PreviewSink(title, overlay))
