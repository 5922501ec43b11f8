"""The Source and Sink Protocols: every source and sink provides what its Protocol declares (the runners use them
without probing)."""

import cv2
import numpy as np
import pytest
import pyvirtualcam

from instantrestore.runtime import media
from instantrestore.runtime.media import (
    CameraSource,
    FileSink,
    FileSource,
    FittedSink,
    MemorySource,
    PreviewSink,
    Sink,
    Source,
    SteadyCamera,
    TeeSink,
    VirtualCameraSink,
)

from tests.support.media_helpers import (
    FakeCamera,
    FakeVideoCapture,
    FaultyCamera,
    RecordingSink,
    RecordingVirtualCamera,
    write_clip,
)


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
    from instantrestore.plugin.benchmarks import CountingSink
    from instantrestore.plugin.commands.camera import StatsLog
    from instantrestore.runtime.frames.stats import PipelineStats

    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    monkeypatch.setattr(media.preview_sink, "display_problem", lambda: None)  # constructs it; no window opens
    virtual = VirtualCameraSink(64, 48, 30, backend="instantrestore-test-recorder")
    sinks = [FileSink(tmp_path / "out.mp4", fps=25, size=(64, 48)), virtual, PreviewSink(),
             FittedSink(virtual, (32, 24)), TeeSink(virtual), RecordingSink(), CountingSink(), StatsLog(PipelineStats())]
    for sink in sinks:
        assert isinstance(sink, Sink), type(sink).__name__
    sinks[0].abort()
    virtual.close()
