"""Real scenes through a pipeline that restores the enrolled 'eileen' (her photo): live and file mode, and
where a paste changed the picture."""

import numpy as np

from instantrestore.runtime.frames.file_run import run_file
from instantrestore.runtime.frames.pipeline import FramePipeline, PipelineOptions
from instantrestore.runtime.identity import Identities
from instantrestore.runtime.media import MemorySource
from instantrestore.runtime.tracking import FaceDetector, Tracker

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, RecordingSink


SCENE_CROP, FPS = 128, 25.0


def pipeline_for(gallery, tracker=None, record=None):
    tracker = tracker or Tracker(FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S))
    pipeline = FramePipeline({"eileen": lambda crops: 255 - crops}, SCENE_CROP, tracker=tracker,
                             identities=Identities(gallery), options=PipelineOptions(color_match=False))
    if record is not None:  # where each face was pasted, per frame
        composite = pipeline.composite_batch

        def noting(frames, located, restored, **options):
            record.extend([[face.matrix for face in faces] for faces in located])
            return composite(frames, located, restored, **options)

        pipeline.composite_batch = noting
    return pipeline


def live(pipeline, frames):
    try:
        return [pipeline.process(frame, index / FPS) for index, frame in enumerate(frames)]
    finally:
        pipeline.tracker.detector.close()


def file_mode(pipeline, frames):
    sink = RecordingSink()
    try:
        run_file(pipeline, MemorySource(frames, FPS), sink)
    finally:
        pipeline.tracker.detector.close()
    return sink.frames


def pasted(outputs, frames) -> list:
    """Per frame: how many pixels the paste changed."""
    return [int((np.abs(o.astype(np.int16) - f.astype(np.int16)).max(axis=2) > 8).sum()) for o, f in zip(outputs, frames)]
