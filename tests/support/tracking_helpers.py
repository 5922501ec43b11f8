"""A video-mode detector and a clip of a moving face: the detector and tracker tests."""

from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, placed_face


def video_detector():
    return FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S)


def moving_clip(frames=24):
    """The astronaut drifting right and up while coming closer: (frame, astronaut->frame matrix)."""
    for index in range(frames):
        scale = 0.8 + 0.02 * index
        offset = (40.0 + 6.0 * index, 10.0 - 2.0 * index)
        yield placed_face((640, 480), scale, offset)
