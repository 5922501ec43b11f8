"""What a recording holds besides its picture (sound, subtitles) and how it reaches the restored file."""

import os

import pytest

from instantrestore.runtime.media import FileSink, FileSource, MediaError

from tests.support.media_helpers import (
    audio_packets,
    stream_info,
    stream_kinds,
    subtitle_cues,
    write_clip,
    write_matroska,
    write_webcam_avi,
)
from tests.support.media_tracks import small_faces, copy_through, audio_layouts


pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".avi"])
def test_a_webcam_avi_with_pcm_sound_goes_into_every_container(tmp_path, suffix):
    """MJPEG + PCM that has only a channel count: the MP4 writer used to refuse it when the file was finished."""
    clip = write_webcam_avi(tmp_path / "cam.avi", small_faces(4))
    source = FileSource(clip)
    out_path = tmp_path / f"out{suffix}"
    notes = copy_through(source, out_path)
    assert stream_info(out_path)["frames"] == 4
    assert [payload for payload, _, _ in audio_packets(out_path)] == [payload for payload, _, _ in audio_packets(clip)]
    if suffix in (".mp4", ".mov"):  # Matroska and AVI store a count only, as the input did
        assert audio_layouts(out_path) == ["stereo"]  # the layout 2 channels imply
    assert notes == ["cam.avi's pixels are yuvj420p (8-bit 4:2:0, full range); the restored copy's are yuv420p "
                     "(8-bit 4:2:0)"]
    assert sorted(os.listdir(tmp_path)) == sorted(["cam.avi", out_path.name])


def test_a_sound_track_the_output_cannot_hold_is_refused_before_any_frame(tmp_path):
    webcam = FileSource(write_webcam_avi(tmp_path / "cheap.avi", small_faces(3), channels=1, sample_format="u8"))
    with pytest.raises(MediaError, match=r"cheap.avi's audio stream #1 \(pcm_u8\) cannot be written into a .mp4 file "
                                         r"\(.*\); write a .mkv"):
        FileSink(tmp_path / "out.mp4", like=webcam)
    # Opus in MOV: accepted stream by stream, refused only when the file is finished (FFmpeg's "Invalid argument")
    phone = FileSource(write_matroska(tmp_path / "call.webm", small_faces(3), codec="libvpx-vp9", sound="opus"))
    with pytest.raises(MediaError, match=r"call.webm's audio stream #1 \(opus\) cannot be written into a .mov file"):
        FileSink(tmp_path / "out.mov", like=phone)
    assert sorted(os.listdir(tmp_path)) == ["call.webm", "cheap.avi"]
    assert copy_through(phone, tmp_path / "out.mp4") == [] and stream_info(tmp_path / "out.mp4")["audio_streams"] == 1


def test_subtitles_are_copied_converted_or_said_to_be_left_out(tmp_path):
    cues = [(0.04, 0.2, "Hello there"), (0.2, 0.36, "Second line")]
    source = FileSource(write_matroska(tmp_path / "film.mkv", small_faces(10), subtitles=cues))
    _, written = subtitle_cues(source.path)
    assert written == cues
    assert copy_through(source, tmp_path / "out.mkv") == []
    assert subtitle_cues(tmp_path / "out.mkv") == ("srt", cues)  # copied
    assert copy_through(source, tmp_path / "out.mp4") == []
    assert subtitle_cues(tmp_path / "out.mp4") == ("mov_text", cues)  # MP4's own text track
    assert copy_through(FileSource(tmp_path / "out.mp4"), tmp_path / "back.mkv") == []
    assert subtitle_cues(tmp_path / "back.mkv") == ("srt", cues)  # and back
    notes = copy_through(source, tmp_path / "out.avi")
    assert notes == ["film.mkv's subtitle stream #2 (srt) cannot go into a .avi file; it is left out (a .mkv "
                     "output keeps it)"]
    assert [kind for kind, _ in stream_kinds(tmp_path / "out.avi")] == ["video", "audio"]


def test_an_empty_sound_track_and_a_change_of_pixel_format_are_said(tmp_path):
    source = FileSource(write_matroska(tmp_path / "ten.mkv", small_faces(3), pix_fmt="yuv420p10le", sound="empty"))
    assert source.pixel_format == "yuv420p10le"
    notes = copy_through(source, tmp_path / "out.mp4")
    assert notes == ["ten.mkv's audio stream #1 (aac) is empty (no sound in it); the restored copy has no such track",
                     "ten.mkv's pixels are yuv420p10le (10-bit 4:2:0); the restored copy's are yuv420p (8-bit 4:2:0)"]
    assert stream_kinds(tmp_path / "out.mp4") == [("video", "h264")]
    plain = FileSource(write_clip(tmp_path / "plain.mp4", small_faces(3)))
    assert copy_through(plain, tmp_path / "plain-out.mp4") == []  # 8-bit 4:2:0 in and out: nothing to say
