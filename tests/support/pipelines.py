"""A frame pipeline on the tiny crop size with a stand-in restorer, and clips of a face."""

from instantrestore.runtime.frames.pipeline import FramePipeline
from instantrestore.runtime.tracking import FaceDetector, Tracker

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, invert_restore, placed_face


CROP = 64  # tiny-model crop size; everything must work for any S


def make_tracker():
    return Tracker(FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S))


def make_pipeline(restore=invert_restore, **options):
    return FramePipeline(restore, CROP, tracker=make_tracker(), **options)


def close_all(pipeline):
    """Close the pipeline and the detector the test gave it (detectors are closed explicitly)."""
    pipeline.close()
    pipeline.tracker.detector.close()


def face_frames(count=20, size=(320, 240)):
    """A face drifting slowly across a small frame."""
    return [placed_face(size, 0.9, (10.0 + 2.0 * index, -30.0 + 1.0 * index))[0] for index in range(count)]
