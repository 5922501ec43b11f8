"""The camera source."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime.media import CameraSource

from tests.support.media_helpers import FakeVideoCapture
from tests.support.pipelines import face_frames


pytestmark = pytest.mark.timeout(120)


def test_camera_source_delivers_rgb_frames_and_reports_an_unplugged_camera(monkeypatch):
    from instantrestore.runtime.media import CameraSource, CameraUnavailable

    frames = face_frames(5)
    monkeypatch.setattr(FakeVideoCapture, "frames", frames)
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    camera = CameraSource("0", size=(1280, 720), fps=24)
    assert camera.live and camera.device == 0
    assert (camera.width, camera.height, camera.fps) == (320, 240, 24)  # what it delivers, not what was asked
    asked = FakeVideoCapture.last.requests
    assert (asked[cv2.CAP_PROP_FRAME_WIDTH], asked[cv2.CAP_PROP_FRAME_HEIGHT]) == (1280, 720)
    assert asked[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert asked[cv2.CAP_PROP_BUFFERSIZE] == 1  # no frames queued in the driver
    got = []
    with pytest.raises(CameraUnavailable, match="camera 0 stopped delivering frames"):
        for item in camera:
            got.append(item)
    assert [item.index for item in got] == list(range(5))
    for item, frame in zip(got, frames):
        np.testing.assert_array_equal(item.image, frame)  # RGB, not the driver's BGR
    assert got[0].time == 0.0 and all(b.time >= a.time for a, b in zip(got, got[1:]))
    capture = camera._capture
    camera.close()
    assert capture.released and list(camera) == []

    monkeypatch.setattr(FakeVideoCapture, "opened", False)
    with pytest.raises(CameraUnavailable, match="cannot open camera '/dev/video7'"):
        CameraSource("/dev/video7")
