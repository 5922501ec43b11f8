"""The Source, Sink and Detector Protocols: every source, sink and detector provides what its Protocol declares
(the runners use them without probing), and the sinks that fit and fan out a camera run's frames."""

import os
import sys

import cv2
import numpy as np
import pytest
import pyvirtualcam

sys.path.insert(0, os.path.dirname(__file__))
from media_helpers import (  # noqa: E402
    MEDIAPIPE_TIMEOUT_S,
    FakeCamera,
    FakeVideoCapture,
    FaultyCamera,
    RecordingSink,
    RecordingVirtualCamera,
    write_clip,
)

from instantrestore.runtime import media  # noqa: E402
from instantrestore.runtime.media import (  # noqa: E402
    CameraSource,
    FileSink,
    FileSource,
    FittedSink,
    MemorySource,
    PreviewClosed,
    PreviewSink,
    Sink,
    Source,
    SteadyCamera,
    TeeSink,
    VirtualCameraSink,
    fit_frame,
)
from instantrestore.runtime.tracking import Detector, FaceDetector, NearAndFarDetector  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def frames(count=3, size=(64, 48)):
    return [np.full((size[1], size[0], 3), 10 * index, np.uint8) for index in range(count)]


def test_every_source_is_a_source(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", frames(3))
    monkeypatch.setattr(FakeVideoCapture, "frames", frames(3))
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    camera = CameraSource("0")
    steady = SteadyCamera(lambda: FaultyCamera(frames(3)))
    sources = [FileSource(clip), camera, steady, MemorySource(frames(3)), FakeCamera(frames(3)),
               FaultyCamera(frames(3))]
    try:
        for source in sources:
            assert isinstance(source, Source), type(source).__name__
    finally:
        for source in sources:
            source.close()
    assert not isinstance(frames(1), Source)  # a plain list of frames is not one


def test_every_sink_is_a_sink(tmp_path, monkeypatch):
    from instantrestore.plugin.bench import CountingSink
    from instantrestore.plugin.camera import StatsLog
    from instantrestore.runtime.pipeline import PipelineStats

    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    monkeypatch.setattr(media, "display_problem", lambda: None)  # constructs it; no window opens
    virtual = VirtualCameraSink(64, 48, 30, backend="instantrestore-test-recorder")
    sinks = [FileSink(tmp_path / "out.mp4", fps=25, size=(64, 48)), virtual, PreviewSink(),
             FittedSink(virtual, (32, 24)), TeeSink(virtual), RecordingSink(), CountingSink(), StatsLog(PipelineStats())]
    for sink in sinks:
        assert isinstance(sink, Sink), type(sink).__name__
    sinks[0].abort()
    virtual.close()


def test_every_detector_is_a_detector():
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as near:
        assert isinstance(near, Detector)
    with NearAndFarDetector("video", MEDIAPIPE_TIMEOUT_S) as both:
        assert isinstance(both, Detector)


def test_memory_source_hands_out_frames_of_its_own_in_a_loop():
    originals = frames(2)
    source = MemorySource(originals, fps=25, total=5)
    items = list(source)
    assert [item.index for item in items] == list(range(5)) and source.frame_count == 5
    assert [item.time for item in items] == [index / 25 for index in range(5)]
    np.testing.assert_array_equal(items[2].image, originals[0])
    items[0].image[:] = 255  # the runners paste into the frames they get: the source's own stay as they were
    assert originals[0].max() == 0


def test_fitted_sink_crops_to_the_output_shape_then_scales():
    wide = np.zeros((90, 160, 3), np.uint8)
    wide[:, :20] = 255  # the left strip goes when a 16:9 frame is fitted into 4:3
    assert fit_frame(wide, (120, 90)).shape == (90, 120, 3) and fit_frame(wide, (120, 90)).max() == 0
    assert fit_frame(wide, (160, 90)) is wide  # the right size already: untouched
    kept = RecordingSink()
    sink = FittedSink(TeeSink(kept, RecordingSink()), (80, 45))
    sink.write(wide, 0.5)
    assert kept.frames[0].shape == (45, 80, 3) and kept.timestamps == [0.5]
    sink.abort()
    assert kept.aborted and not kept.closed


def test_a_closed_preview_says_so(monkeypatch):
    monkeypatch.setattr(media, "display_problem", lambda: None)
    shown = []
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q"))
    preview = PreviewSink(overlay=lambda image: 255 - image)
    with pytest.raises(PreviewClosed):
        preview.write(np.zeros((48, 64, 3), np.uint8))
    assert shown and shown[0].min() > 0  # the overlay drew on what the window showed
