"""A capture camera, read through OpenCV."""

from __future__ import annotations

import stat
import time
from fractions import Fraction
from pathlib import Path
from typing import Optional

from .base import CameraUnavailable, SourceFrame, SourceNotFound
from .registry import register_source


class CameraSource:
    """A capture camera through OpenCV. device: index (0, "0") or a device path ("/dev/video2").

    size: (width, height) to request; fps: rate to request. The camera may pick something else;
    width, height and fps report what it delivers.
    """

    live = True

    def __init__(self, device=0, size: Optional[tuple] = None, fps: Optional[float] = None):
        import cv2

        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device = device
        self._capture = cv2.VideoCapture(device)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraUnavailable(f"cannot open camera {device!r}")
        # the newest frame, not one queued in the driver: a busy moment must not add lasting latency
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if size is not None:
            # USB webcams give 720p and 1080p at full rate only as MJPEG (OpenCV asks for YUYV, often 10 fps
            # there); a camera without MJPEG keeps its own format
            self._capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, int(size[0]))
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, int(size[1]))
        if fps is not None:
            self._capture.set(cv2.CAP_PROP_FPS, float(fps))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(reported).limit_denominator(1001) if reported and reported > 0 else Fraction(fps or 30)
        self.frame_count = 0  # unbounded

    def __iter__(self):
        import cv2

        start = None
        index = 0
        failures = 0
        while self._capture is not None:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                failures += 1
                # A few failed reads happen while a camera warms up; many mean it is gone.
                if failures >= 30:
                    raise CameraUnavailable(f"camera {self.device!r} stopped delivering frames")
                time.sleep(0.01)
                continue
            failures = 0
            now = time.monotonic()
            start = now if start is None else start
            yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now - start, index)
            index += 1

    def close(self):
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def is_device_node(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def names_a_camera(spec: str) -> bool:
    """A camera index ("0") or a device path ("/dev/video2", or a character device anywhere)."""
    return spec.isdigit() or spec.startswith("/dev/") or is_device_node(Path(spec))


def open_camera(spec: str, size: Optional[tuple] = None, fps: Optional[float] = None, **ignored) -> CameraSource:
    if spec.startswith("/dev/") and not Path(spec).exists():
        raise SourceNotFound(f"{spec}: no such camera device")
    return CameraSource(int(spec) if spec.isdigit() else spec, size=size, fps=fps)


register_source("camera", names_a_camera, open_camera)
