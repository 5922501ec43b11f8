"""The Source, Sink and Detector Protocols: every source, sink and detector provides what its Protocol declares
(the runners use them without probing), the sinks that fit and fan out a camera run's frames, files in and
out (rotation, containers, codecs, damaged inputs, failed writes), the camera source and the virtual camera sink."""

import os
import re
from fractions import Fraction

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
    MediaError,
    MemorySource,
    PreviewClosed,
    PreviewSink,
    Sink,
    Source,
    SteadyCamera,
    TeeSink,
    VirtualCameraSink,
    VirtualCameraUnavailable,
    fit_frame,
)
from instantrestore.runtime.frames.file_run import run_file
from instantrestore.runtime.frames.live_run import run_live

from tests.support.media_helpers import (
    BrokenVirtualCamera,
    audio_packets,
    cut_off,
    stream_kinds,
    subtitle_cues,
    write_matroska,
    write_webcam_avi,
    FakeCamera,
    FakeVideoCapture,
    FaultyCamera,
    RecordingSink,
    RecordingVirtualCamera,
    placed_face,
    read_frames,
    stream_info,
    write_clip,
)
from tests.support.pipelines import close_all, face_frames, make_pipeline


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
    from instantrestore.runtime.frames.stats import PipelineStats

    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    monkeypatch.setattr(media, "display_problem", lambda: None)  # constructs it; no window opens
    virtual = VirtualCameraSink(64, 48, 30, backend="instantrestore-test-recorder")
    sinks = [FileSink(tmp_path / "out.mp4", fps=25, size=(64, 48)), virtual, PreviewSink(),
             FittedSink(virtual, (32, 24)), TeeSink(virtual), RecordingSink(), CountingSink(), StatsLog(PipelineStats())]
    for sink in sinks:
        assert isinstance(sink, Sink), type(sink).__name__
    sinks[0].abort()
    virtual.close()


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


# ---------------------------------------------------------------- recordings as cameras and phones write them


def small_faces(count=4, size=(160, 120)):
    return [placed_face(size, 0.22, (20.0 + 2 * index, 5.0))[0] for index in range(count)]


def copy_through(source, out_path):
    """The frames of `source` written unchanged into a FileSink like it; the sink's notes."""
    sink = FileSink(out_path, like=source)
    with sink:
        for item in source:
            sink.write(item.image, item.time)
    return sink.notes


def audio_layouts(path):
    import av

    with av.open(str(path)) as container:
        return [stream.layout.name for stream in container.streams.audio]


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


def test_a_fifo_a_device_and_a_folder_are_named_not_opened(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it would wait for a writer: the test would hang
    for path, said in ((fifo, "is a FIFO (named pipe), not a video file"),
                       ("/dev/zero", "is a device, not a video file"),
                       (tmp_path, "is a folder, not a video file"), (tmp_path / "none.mp4", "video file not found")):
        with pytest.raises(MediaError, match=re.escape(said)):
            FileSource(path)


def test_a_failure_when_finishing_names_the_output_not_the_temp_file(face_clip, tmp_path):
    out_path = tmp_path / "out.mp4"
    sink = FileSink(out_path, like=FileSource(face_clip))
    sink.write(np.zeros((240, 320, 3), np.uint8))
    sink.temp_path.unlink()  # gone from under us (a cleaner, another program)
    with pytest.raises(MediaError) as error:
        sink.close()
    assert str(out_path) in str(error.value) and ".partial" not in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- camera source


def test_camera_source_delivers_rgb_frames_and_reports_an_unplugged_camera(monkeypatch):
    from instantrestore.runtime.media import CameraSource, CameraUnavailable

    frames = face_frames(5)
    monkeypatch.setattr(FakeVideoCapture, "frames", frames)
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    camera = CameraSource("0", size=(1280, 720), fps=24)
    assert camera.live and camera.device == 0
    assert (camera.width, camera.height, camera.fps) == (320, 240, 24)  # what it delivers, not what was asked
    asked = FakeVideoCapture.last.requests
    assert (asked[cv2.CAP_PROP_FRAME_WIDTH], asked[cv2.CAP_PROP_FRAME_HEIGHT]) == (1280, 720)
    assert asked[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert asked[cv2.CAP_PROP_BUFFERSIZE] == 1  # no frames queued in the driver
    got = []
    with pytest.raises(CameraUnavailable, match="camera 0 stopped delivering frames"):
        for item in camera:
            got.append(item)
    assert [item.index for item in got] == list(range(5))
    for item, frame in zip(got, frames):
        np.testing.assert_array_equal(item.image, frame)  # RGB, not the driver's BGR
    assert got[0].time == 0.0 and all(b.time >= a.time for a, b in zip(got, got[1:]))
    capture = camera._capture
    camera.close()
    assert capture.released and list(camera) == []

    monkeypatch.setattr(FakeVideoCapture, "opened", False)
    with pytest.raises(CameraUnavailable, match="cannot open camera '/dev/video7'"):
        CameraSource("/dev/video7")


# ---------------------------------------------------------------- virtual camera


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
