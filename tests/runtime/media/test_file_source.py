"""Video files in: rotation, damaged and cut-off files."""

import os

import numpy as np
import pytest

from instantrestore.runtime.media import FileSink, FileSource, MediaError
from instantrestore.runtime.frames.file_run import run_file

from tests.support.media_helpers import cut_off, placed_face, read_frames, write_clip, write_matroska
from tests.support.media_tracks import small_faces
from tests.support.pipelines import close_all, face_frames, make_pipeline


pytestmark = pytest.mark.timeout(120)


def test_phone_video_with_a_rotation_tag_is_restored_upright(tmp_path):
    # A portrait phone clip: pixels stored sideways, a display matrix saying "turn 90 degrees clockwise".
    upright = [placed_face((240, 320), 0.6, (-30.0 + index, 10.0))[0] for index in range(6)]
    clip = write_clip(tmp_path / "phone.mp4", [np.rot90(frame, 1) for frame in upright], fps=30, rotation=-90)
    source = FileSource(clip)
    assert source.rotation == 270 and (source.width, source.height) == (240, 320)
    decoded = [item.image for item in source]
    assert decoded[0].shape == (320, 240, 3)
    assert np.abs(decoded[0].astype(int) - upright[0].astype(int)).mean() < 3  # as a player shows it
    out_path = tmp_path / "phone.restored.mp4"
    pipeline = make_pipeline()
    try:
        stats = run_file(pipeline, source, FileSink(out_path, like=source))
    finally:
        close_all(pipeline)
    assert stats.summary().get("no_face", 0) == 0  # the face was restored in every frame
    written = read_frames(out_path)
    assert len(written) == 6 and written[0].shape == (320, 240, 3)
    assert FileSource(out_path).rotation == 0  # stored upright: plays the same everywhere


def test_unreadable_and_truncated_files_raise_media_error(face_clip, tmp_path):
    with pytest.raises(MediaError, match="not found"):
        FileSource(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(MediaError):
        FileSource(garbage)
    # moov at the end: a cut file cannot even be opened.
    data = open(face_clip, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError):
        list(FileSource(cut))
    # moov at the front (streaming layout): it opens, then runs out of frames.
    streaming = write_clip(tmp_path / "fast.mp4", face_frames(20), fps=25, faststart=True)
    data = open(streaming, "rb").read()
    cut_streaming = tmp_path / "cut_fast.mp4"
    cut_streaming.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(MediaError) as error:
        list(FileSource(cut_streaming))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, codec, sound", [("rec.mkv", "libx264", "aac"), ("rec.webm", "libvpx-vp9", "opus")])
def test_a_cut_off_matroska_or_webm_is_refused_saying_what_is_missing(tmp_path, name, codec, sound):
    """Matroska declares no frame count, only a duration: a cut file used to come out shorter without a word."""
    whole = write_matroska(tmp_path / name, small_faces(25), fps=25, codec=codec, sound=sound)
    assert FileSource(whole).frame_count == 25  # the whole file passes
    cut = cut_off(whole, tmp_path / f"cut-{name}", 0.9)
    with pytest.raises(MediaError) as error:
        FileSource(cut)
    message = str(error.value)
    assert message.startswith(f"cut-{name} is truncated: it holds ") and "of the 1.00 s it declares" in message
    held = float(message.split("it holds ")[1].split(" s")[0])
    assert 0.0 < held < 0.96 and f"{1.0 - held:.2f} s, about {int(round((1.0 - held) * 25))} frames, missing" in message


def test_a_live_matroska_that_declares_no_duration_is_taken_as_it_is(tmp_path):
    """Browsers and live encoders write WebM without a duration: nothing to compare with, nothing refused."""
    import av

    with av.open(str(tmp_path / "live.webm"), "w", options={"live": "1"}) as container:
        video = container.add_stream("libvpx-vp9", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        for frame in small_faces(5):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    assert len(list(FileSource(tmp_path / "live.webm"))) == 5
