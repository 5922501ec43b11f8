"""open_source / open_sink: the built-in specs, the errors that name what was not found, and a new kind of source
or sink joining by one registration."""

import cv2
import numpy as np
import pytest
import pyvirtualcam

from instantrestore.runtime.media import (CameraSource, FileSink, FileSource, MediaError, MemorySource, Sink, Source,
                                          SourceNotFound, VirtualCameraSink, open_sink, open_source, register_sink,
                                          register_source, registry)

from tests.support.media_helpers import FakeVideoCapture, RecordingSink, RecordingVirtualCamera, write_clip


pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def own_registry(monkeypatch):
    """This test's registrations stay in this test."""
    monkeypatch.setattr(registry, "SOURCES", dict(registry.SOURCES))
    monkeypatch.setattr(registry, "SINKS", dict(registry.SINKS))


def grey_frames(count, size=(64, 48)):
    return [np.full((size[1], size[0], 3), 20 * index, np.uint8) for index in range(count)]


@pytest.mark.usefixtures("own_registry")
def test_a_toy_source_joins_by_one_registration():
    opened = []

    def open_toy(spec, fps=25.0, **ignored):
        opened.append((spec, fps))
        return MemorySource(grey_frames(int(spec.split(":")[1])), fps=fps)

    register_source("toy", lambda spec: spec.startswith("toy:"), open_toy)
    source = open_source("toy:3", fps=10, size=(1280, 720))  # a camera's size goes to the camera alone
    assert isinstance(source, Source) and opened == [("toy:3", 10)]
    assert [int(item.image[0, 0, 0]) for item in source] == [0, 20, 40]
    with pytest.raises(SourceNotFound, match="^tay:3: no such camera index, device or video file$"):
        open_source("tay:3")  # what no registration matches


def test_built_in_specs_open_cameras_and_files_and_say_what_is_not_there(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", grey_frames(3))
    file_source = open_source(clip, size=(1280, 720), fps=30)
    assert isinstance(file_source, FileSource) and (file_source.width, file_source.height) == (64, 48)
    monkeypatch.setattr(FakeVideoCapture, "frames", grey_frames(3, (1280, 720)))
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    camera = open_source("0", size=(1280, 720), fps=30)
    try:
        assert isinstance(camera, CameraSource) and camera.device == 0 and camera.width == 1280
    finally:
        camera.close()
    with pytest.raises(SourceNotFound, match=r"^/dev/video-none: no such camera device$"):
        open_source("/dev/video-none")
    with pytest.raises(SourceNotFound, match=r"is a folder, not a camera or video file$"):
        open_source(tmp_path)
    with pytest.raises(SourceNotFound, match=r"missing.mp4: no such camera index, device or video file$"):
        open_source(tmp_path / "missing.mp4")


@pytest.mark.usefixtures("own_registry")
def test_sinks_open_by_spec_and_a_toy_sink_joins_by_one_registration(tmp_path):
    file_sink = open_sink(tmp_path / "out.mp4", fps=25, size=(64, 48), width=1, backend="ignored")
    assert isinstance(file_sink, FileSink) and file_sink.fps == 25
    file_sink.abort()
    assert list(tmp_path.iterdir()) == []  # aborted: nothing left behind
    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    virtual = open_sink("virtual-camera", width=64, height=48, fps=30, backend="instantrestore-test-recorder")
    assert isinstance(virtual, VirtualCameraSink) and (virtual.width, virtual.height) == (64, 48)
    virtual.close()
    with pytest.raises(MediaError, match="not a sink this program knows"):
        open_sink("nowhere")
    kept = RecordingSink()
    register_sink("toy", lambda spec: spec == "toy", lambda spec, **options: kept)
    sink = open_sink("toy")
    assert isinstance(sink, Sink)
    sink.write(grey_frames(1)[0], 0.0)
    assert len(kept.frames) == 1
