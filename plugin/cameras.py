"""The cameras this system has: what `doctor` reports and the panel offers as inputs."""

from __future__ import annotations

from . import vcam

OPENCV_INDICES = 3  # where no OS listing exists, camera indices 0..2 are tried


def probe_opencv_cameras(limit: int = OPENCV_INDICES) -> list:
    """The OpenCV camera indices below `limit` that open (a short probe; nothing is read from them)."""
    import cv2

    found = []
    for index in range(limit):
        capture = cv2.VideoCapture(index)
        try:
            if capture.isOpened():
                found.append(index)
        finally:
            capture.release()
    return found


def list_cameras() -> list:
    """(label, input spec) for each camera this system has, by name where the OS gives one; the virtual cameras
    (v4l2loopback) are not inputs."""
    if vcam.platform_name() == "linux":
        return [(f"{device.name} ({device.path})", device.path) for device in vcam.linux_video_devices()
                if not device.loopback]
    return [(f"Camera {index}", str(index)) for index in probe_opencv_cameras()]
