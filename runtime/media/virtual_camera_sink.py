"""Sends frames to a virtual webcam through pyvirtualcam."""

from __future__ import annotations

from typing import Optional

from .base import MediaError, VirtualCameraUnavailable, check_image, one_line
from .registry import register_sink


class VirtualCameraSink:
    """Sends frames to a virtual webcam through pyvirtualcam.

    backend: pyvirtualcam backend name (None tries all: v4l2loopback, OBS, Unity Capture ...);
    device: a specific device, e.g. "/dev/video10". Raises VirtualCameraUnavailable with
    pyvirtualcam's reason when no virtual camera can be opened.
    """

    live = True

    def __init__(self, width: int, height: int, fps: float, backend: Optional[str] = None, device: Optional[str] = None):
        try:
            import pyvirtualcam
        except ImportError as error:
            raise VirtualCameraUnavailable(f"pyvirtualcam is not installed: {error}") from error
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(sorted(pyvirtualcam.camera.BACKENDS)) or "none"
            raise VirtualCameraUnavailable(f"unknown virtual camera backend {backend!r} (available: {known})")
        try:
            self._camera = pyvirtualcam.Camera(
                self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend, device=device
            )
        except Exception as error:
            raise VirtualCameraUnavailable(f"no virtual camera available: {one_line(error)}") from error
        self.device = self._camera.device
        self.backend = self._camera.backend
        self.frames_written = 0

    def write(self, image, timestamp: Optional[float] = None):
        if self._camera is None:
            raise MediaError("virtual camera is closed")
        self._camera.send(check_image(image, self.width, self.height))
        self.frames_written += 1

    def close(self):
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    abort = close  # nothing to leave behind

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def open_virtual_camera(spec: str, width: int, height: int, fps: float, backend: Optional[str] = None,
                        device: Optional[str] = None, **ignored) -> VirtualCameraSink:
    return VirtualCameraSink(width, height, fps, backend=backend, device=device)


register_sink("virtual-camera", lambda spec: spec == "virtual-camera", open_virtual_camera)
