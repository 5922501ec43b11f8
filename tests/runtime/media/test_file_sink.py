"""Video files out: containers, codecs, failed writes."""

import os
from fractions import Fraction

import numpy as np
import pytest

from instantrestore.runtime.media import FileSink, FileSource, MediaError

from tests.support.media_helpers import placed_face, read_frames, stream_info


pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("suffix", [".mov", ".mkv", ".avi"])
def test_other_containers_keep_frames_rate_and_audio(face_clip, tmp_path, suffix):
    source = FileSource(face_clip)
    out_path = tmp_path / f"talk{suffix}"
    with FileSink(out_path, like=source) as sink:
        for item in source:
            sink.write(item.image, item.time)
    info = stream_info(out_path)
    assert info["frames"] == 20 and info["fps"] == Fraction(25) and info["audio_streams"] == 1
    # declared (MP4, MOV, AVI; an AVI once declared 24 times too many) or estimated from the duration (MKV)
    assert abs(FileSource(out_path).frame_count - 20) <= (1 if suffix == ".mkv" else 0)


@pytest.mark.parametrize("codec, size", [("libx264", (321, 241)), ("mpeg4", (320, 240))])
def test_odd_sizes_and_the_mpeg4_fallback_encode_faithfully(tmp_path, codec, size):
    frames = [placed_face(size, 0.45, (40.0 + index, 10.0))[0] for index in range(5)]
    out_path = tmp_path / "out.mp4"
    with FileSink(out_path, fps=25, size=size, codec=codec) as sink:
        for index, frame in enumerate(frames):
            sink.write(frame, index / 25)
    written = read_frames(out_path)
    assert len(written) == 5 and written[0].shape == (size[1], size[0], 3)
    error = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, written)])
    assert error < 3.5  # colours and layout survive, up to codec loss (about 2 to 3 on this small detailed frame)
    if codec == "mpeg4":
        with pytest.raises(MediaError, match="mpeg4 cannot encode an odd frame size 321x241"):
            FileSink(tmp_path / "odd.mp4", fps=25, size=(321, 241), codec="mpeg4")


def test_a_container_that_cannot_hold_h264_is_a_clear_error(face_clip, tmp_path):
    with pytest.raises(MediaError, match="'webm' format does not support 'libx264'"):
        FileSink(tmp_path / "talk.webm", like=FileSource(face_clip))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_an_existing_output_untouched(face_clip, tmp_path):
    out_path = tmp_path / "existing.mp4"
    out_path.write_bytes(b"previous result")
    source = FileSource(face_clip)
    sink = FileSink(out_path, like=source)
    with pytest.raises(MediaError):
        sink.write(np.zeros((10, 10, 3), np.uint8))  # wrong frame size
    sink.abort()
    assert out_path.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["existing.mp4"]


def test_sink_refuses_to_overwrite_its_input(face_clip):
    source = FileSource(face_clip)
    with pytest.raises(MediaError, match="refusing"):
        FileSink(face_clip, like=source)


def test_a_failure_when_finishing_names_the_output_not_the_temp_file(face_clip, tmp_path):
    out_path = tmp_path / "out.mp4"
    sink = FileSink(out_path, like=FileSource(face_clip))
    sink.write(np.zeros((240, 320, 3), np.uint8))
    sink.temp_path.unlink()  # gone from under us (a cleaner, another program)
    with pytest.raises(MediaError) as error:
        sink.close()
    assert str(out_path) in str(error.value) and ".partial" not in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []
