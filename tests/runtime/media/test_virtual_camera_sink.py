"""The virtual camera sink."""

import numpy as np
import pytest
import pyvirtualcam

from instantrestore.runtime.media import MediaError, VirtualCameraSink, VirtualCameraUnavailable
from instantrestore.runtime.frames.live_run import run_live

from tests.support.media_helpers import BrokenVirtualCamera, FakeCamera, RecordingVirtualCamera
from tests.support.pipelines import close_all, face_frames, make_pipeline


pytestmark = pytest.mark.timeout(120)


def test_virtual_camera_sink_through_a_registered_backend():
    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    RecordingVirtualCamera.instances.clear()
    frames = face_frames(12)
    sink = VirtualCameraSink(320, 240, 30, backend="instantrestore-test-recorder")
    assert sink.backend == "instantrestore-test-recorder"
    pipeline = make_pipeline()
    try:
        report = run_live(pipeline, FakeCamera(frames, fps=30.0), sink)
    finally:
        close_all(pipeline)
        sink.close()
    backend = RecordingVirtualCamera.instances[-1]
    assert backend.closed
    assert len(backend.frames) == report.sent >= 9
    assert backend.frames[-1].shape == (320 * 240 * 3,)  # pyvirtualcam hands backends flat RGB
    with pytest.raises(MediaError):
        VirtualCameraSink(320, 240, 30, backend="instantrestore-test-recorder").write(np.zeros((10, 10, 3), np.uint8))


def test_missing_virtual_camera_is_a_clear_error():
    pyvirtualcam.register_backend("instantrestore-test-broken", BrokenVirtualCamera)
    with pytest.raises(VirtualCameraUnavailable, match="/dev/video42 does not exist"):
        VirtualCameraSink(320, 240, 30, backend="instantrestore-test-broken")
    with pytest.raises(VirtualCameraUnavailable, match="unknown virtual camera backend"):
        VirtualCameraSink(320, 240, 30, backend="no-such-backend")
