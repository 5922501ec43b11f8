"""The frame pipeline end to end: file mode with audio, failures, live mode under a slow restorer; and when
and where a face is pasted in real scenes (cuts, a detector blink, motion, a far face, overlapping faces)."""

import hashlib
import os
import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
import pyvirtualcam

from instantrestore.runtime import align
from instantrestore.runtime.align import invert_matrix
from instantrestore.runtime.composite import face_mask
from instantrestore.runtime.identity import Identities, shared_recognizer
from instantrestore.runtime.media import FileSink, FileSource, MediaError, MemorySource, SteadyCamera, VirtualCameraSink
from instantrestore.runtime.pipeline import FramePipeline, PipelineError, PipelineStats, run_file, run_live
from instantrestore.runtime.tracking import FaceDetection, FaceDetector, Tracker

from tests.support.media_helpers import (
    MEDIAPIPE_TIMEOUT_S,
    FailingRestore,
    FakeCamera,
    FaultyCamera,
    RecordingSink,
    RecordingVirtualCamera,
    SlowRestore,
    apply_affine,
    audio_packets,
    invert_restore,
    no_face_image,
    placed_face,
    read_frames,
    stream_info,
    write_clip,
)
from tests.support.people import astronaut
from tests.support.pipelines import CROP, close_all, face_frames, make_pipeline


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- FramePipeline


@pytest.mark.timeout(120)
def test_no_face_frames_pass_through_bit_exact():
    pipeline = make_pipeline()
    try:
        for index in range(5):
            frame = no_face_image()
            before = frame.copy()
            out = pipeline.process(frame, index / 30.0)
            assert out is frame
            np.testing.assert_array_equal(out, before)
        assert pipeline.stats.summary()["no_face"] == 5
        batch = [no_face_image() for _ in range(3)]
        outputs = pipeline.process_batch(batch, [1.0, 1.1, 1.2])
        assert all(out is frame for out, frame in zip(outputs, batch))
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_only_the_face_region_changes():
    pipeline = make_pipeline()
    try:
        for index, frame in enumerate(face_frames(6)):
            out = pipeline.process(frame, index / 25.0)
            matrix = pipeline.last_matrix
            assert matrix is not None
            inverse = align.invert_matrix(matrix)
            inside = cv2.warpAffine(face_mask(CROP), inverse, (frame.shape[1], frame.shape[0]), borderValue=0.0) > 0
            np.testing.assert_array_equal(out[~inside], frame[~inside])
            assert np.abs(out[inside].astype(int) - frame[inside].astype(int)).mean() > 20
        summary = pipeline.stats.summary()
        for stage in ("track", "align", "restore", "composite"):
            assert summary["stages"][stage]["count"] == 6
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_batched_processing_matches_frame_by_frame():
    frames = face_frames(8)
    stamps = [index / 25.0 for index in range(8)]
    single = make_pipeline()
    batched = make_pipeline()
    calls = []

    def counting_restore(batch):
        calls.append(len(batch))
        return 255 - batch

    batched.restore = counting_restore
    try:
        one_by_one = [single.process(frame, stamp) for frame, stamp in zip(frames, stamps)]
        together = batched.process_batch(frames[:4], stamps[:4]) + batched.process_batch(frames[4:], stamps[4:])
        for a, b in zip(one_by_one, together):
            np.testing.assert_array_equal(a, b)
        assert calls == [4, 4]
    finally:
        close_all(single)
        close_all(batched)


@pytest.mark.timeout(120)
def test_the_restorer_is_handed_the_buffer_the_crops_were_warped_into(tmp_path):
    from instantrestore.runtime.media import MemorySource

    frames = face_frames(7)
    originals = [frame.copy() for frame in frames]  # run_file pastes into the frames it is given
    handed, located_batches = [], []
    pipeline = make_pipeline(restore=lambda batch: handed.append(batch) or 255 - batch)
    restore_located = pipeline.restore_located

    def noting(located):
        located_batches.append(located)
        return restore_located(located)

    pipeline.restore_located = noting
    try:
        run_file(pipeline, MemorySource(frames, 25), RecordingSink(), batch_size=3)
    finally:
        close_all(pipeline)
    assert [len(batch) for batch in handed] == [3, 3, 1]
    for batch, located in zip(handed, located_batches):
        faces = [face for frame_faces in located for face in frame_faces]
        assert batch.base is faces[0].crops and batch.shape == faces[0].crops.shape  # the buffer, not a copy
        assert [face.slot for face in faces] == list(range(len(faces)))
    placed = [faces for located in located_batches for faces in located]
    for original, (face,) in zip(originals, placed):
        np.testing.assert_array_equal(face.crop, align.warp_to_crop(original, face.matrix, CROP))


@pytest.mark.timeout(120)
def test_each_profile_gets_consecutive_slots_of_the_batch_buffer():
    frames = face_frames(3)
    keypoints = align.template_points(CROP) / CROP * 120.0 + 60.0  # a face in the middle of each frame
    handed = []
    pipeline = make_pipeline(restore=lambda batch: handed.append(batch) or 255 - batch)
    try:
        located = pipeline._align(frames, [[(keypoints, "eileen", 1.0), (keypoints + 5.0, "grace", 1.0)]] * 3)
        restored = pipeline.restore_located(located)
    finally:
        close_all(pipeline)
    faces = [face for frame_faces in located for face in frame_faces]
    assert [face.slot for face in faces] == [0, 3, 1, 4, 2, 5]
    assert [(batch.base is faces[0].crops, len(batch)) for batch in handed] == [(True, 3), (True, 3)]
    for frame, frame_faces in zip(frames, located):
        for face in frame_faces:
            np.testing.assert_array_equal(face.crop, align.warp_to_crop(frame, face.matrix, CROP))
    np.testing.assert_array_equal(restored.crops, 255 - np.stack([face.crop for face in faces]))


@pytest.mark.timeout(120)
def test_restorer_returning_the_wrong_shape_is_a_clear_error():
    pipeline = make_pipeline(restore=lambda batch: batch[:, ::2])
    try:
        with pytest.raises(PipelineError, match="restorer returned"):
            pipeline.process(face_frames(1)[0], 0.0)
        with pytest.raises(PipelineError):
            pipeline.process(np.zeros((10, 10), np.uint8), 0.0)
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_stats_line_and_overlay():
    stats = PipelineStats()
    stats.add("restore", 0.030)
    stats.add("restore", 0.010, frames=2)
    stats.count("dropped", 3)
    summary = stats.summary()
    assert summary["stages"]["restore"]["count"] == 3
    assert summary["stages"]["restore"]["mean_ms"] == pytest.approx((30 + 5 + 5) / 3)
    assert "restore" in stats.format_line() and "dropped 3" in stats.format_line()
    frame = np.zeros((120, 320, 3), np.uint8)
    drawn = stats.draw(frame)
    assert drawn.shape == frame.shape and drawn.any() and not frame.any()
    with pytest.raises(PipelineError):
        stats.add("nonsense", 1.0)


# ---------------------------------------------------------------- file mode


@pytest.mark.timeout(120)
def test_file_mode_keeps_frames_rate_duration_and_audio(face_clip, tmp_path):
    input_hash = sha256(face_clip)
    source = FileSource(face_clip)
    assert (source.width, source.height, source.fps, source.frame_count) == (320, 240, 25, 20)
    assert source.audio_stream_count == 1
    out_path = tmp_path / "talk.restored.mp4"
    progress = []
    pipeline = make_pipeline()
    try:
        stats = run_file(pipeline, source, FileSink(out_path, like=source), progress=lambda d, t: progress.append((d, t)), batch_size=3)
    finally:
        close_all(pipeline)
    assert sha256(face_clip) == input_hash  # the input is never modified
    assert progress[-1] == (20, 20) and len(progress) == 20
    assert sorted(os.listdir(tmp_path)) == ["talk.restored.mp4"]  # no temp files left
    before, after = stream_info(face_clip), stream_info(out_path)
    assert after["frames"] == before["frames"] == 20
    assert after["fps"] == before["fps"] == Fraction(25)
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-6)
    # Audio is remuxed packet for packet: same payloads and timestamps.
    assert audio_packets(out_path) == audio_packets(face_clip)
    assert len(audio_packets(face_clip)) > 10
    summary = stats.summary()
    for stage in ("decode", "track", "restore", "composite", "encode"):
        assert summary["stages"][stage]["count"] == 20

    # Only the face changed: far from the face the re-encoded output equals the input up to codec noise.
    inputs, outputs = read_frames(face_clip), read_frames(out_path)
    corner_error = max(np.abs(a[:, :40].astype(int) - b[:, :40].astype(int)).mean() for a, b in zip(inputs, outputs))
    face_change = np.mean([np.abs(a[50:120, 180:240].astype(int) - b[50:120, 180:240].astype(int)).mean() for a, b in zip(inputs, outputs)])
    assert corner_error < 2.0 and face_change > 20.0


@pytest.mark.timeout(120)
def test_file_sink_without_audio_and_with_batching_equals_in_memory_result(tmp_path):
    clip = write_clip(tmp_path / "silent.mp4", face_frames(6), fps=30)
    source = FileSource(clip)
    assert source.audio_stream_count == 0
    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        run_file(pipeline, source, sink, batch_size=4)
    finally:
        close_all(pipeline)
    assert sink.closed and len(sink.frames) == 6
    assert sink.timestamps == pytest.approx([index / 30.0 for index in range(6)])


@pytest.mark.timeout(120)
def test_failed_restore_leaves_no_partial_output(face_clip, tmp_path):
    out_path = tmp_path / "broken.mp4"
    source = FileSource(face_clip)
    pipeline = make_pipeline(restore=FailingRestore(fail_at=5))
    try:
        with pytest.raises(RuntimeError, match="on purpose"):
            run_file(pipeline, source, FileSink(out_path, like=source))
    finally:
        close_all(pipeline)
    assert os.listdir(tmp_path) == []


class _HandshakeSink(RecordingSink):
    """Writing frame k waits until the restorer has started on frame k+1: only a run_file whose
    stages overlap gets through (a serial one writes k before it restores k+1, and times out)."""

    def __init__(self, restore_started):
        super().__init__()
        self.restore_started = restore_started
        self.overlapped = []

    def write(self, image, timestamp=None):
        following = len(self.frames) + 1
        if following < 5:
            self.overlapped.append(self.restore_started[following].wait(timeout=10))
        super().write(image, timestamp)


@pytest.mark.timeout(120)
def test_file_mode_restores_the_next_frame_while_writing_the_last(tmp_path):
    clip = write_clip(tmp_path / "overlap.mp4", face_frames(6), fps=25)
    started = [threading.Event() for _ in range(6)]
    calls = []

    def restore(batch):
        started[len(calls)].set()
        calls.append(len(batch))
        return invert_restore(batch)

    sink = _HandshakeSink(started)
    pipeline = make_pipeline(restore=restore)
    try:
        run_file(pipeline, FileSource(clip), sink)
    finally:
        close_all(pipeline)
    assert sink.overlapped == [True] * 4 and len(sink.frames) == 6 and sink.closed
    # Order is kept: the i-th written frame is the i-th decoded frame, restored.
    reference = make_pipeline()
    try:  # file mode places faces with look-ahead: the same placement, done in one thread
        ahead = reference.look_ahead()
        placed = [done for frame in FileSource(clip) for done in ahead.push(frame, frame.image, frame.time)]
        _, frames, located = map(list, zip(*(placed + ahead.flush())))
        expected = reference.composite_batch(frames, located, reference.restore_located(located))
    finally:
        close_all(reference)
    for written, wanted in zip(sink.frames, expected):
        np.testing.assert_array_equal(written, wanted)


class _FailingSource:
    """Yields the frames of a clip, then fails partway like a damaged file."""

    live, device = False, None

    def __init__(self, clip, fail_after):
        source = FileSource(clip)
        self.width, self.height, self.fps = source.width, source.height, source.fps
        self.frames = list(source)[:fail_after]
        self.frame_count = 20

    def __iter__(self):
        yield from self.frames
        raise MediaError("talk.mp4: the file ends early (damaged)")

    def close(self):
        pass


class _FailingSink(RecordingSink):
    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def write(self, image, timestamp=None):
        if len(self.frames) == self.fail_at:
            raise MediaError("disk full")
        super().write(image, timestamp)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("failing", ["source", "sink"])
def test_file_mode_failure_in_any_stage_aborts_the_output(face_clip, failing):
    source = _FailingSource(face_clip, 7) if failing == "source" else FileSource(face_clip)
    sink = _FailingSink(fail_at=3 if failing == "sink" else 100)
    pipeline = make_pipeline()
    try:
        with pytest.raises(MediaError, match="ends early" if failing == "source" else "disk full"):
            run_file(pipeline, source, sink, batch_size=2)
    finally:
        close_all(pipeline)
    assert sink.aborted and not sink.closed
    assert len(sink.frames) <= (7 if failing == "source" else 3)


@pytest.mark.timeout(120)
def test_no_face_clip_passes_through_bit_exact_in_file_mode(tmp_path):
    clip = write_clip(tmp_path / "empty_room.mp4", [no_face_image() for _ in range(5)], fps=25)
    source = FileSource(clip)
    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        run_file(pipeline, source, sink)
    finally:
        close_all(pipeline)
    decoded = [frame.image for frame in source]
    assert len(decoded) == len(sink.frames) == 5
    for original, written in zip(decoded, sink.frames):
        np.testing.assert_array_equal(original, written)


def noisy_frames(count=6, size=(320, 240), seed=0):
    """A noisy room with no face: sensor noise over a colour gradient, as a dim phone recording looks."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    base = 70 + 90 * ramp * np.array([1.0, 0.6, 0.3], np.float32) + np.array([10, 20, 40], np.float32)
    base = np.broadcast_to(base, (height, width, 3))
    return [np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8) for _ in range(count)]


def restore_file(clip, out_path):
    """The file-mode round trip of pixels no face touches: decode, encode."""
    source = FileSource(clip)
    with FileSink(out_path, like=source) as sink:
        for frame in source:
            sink.write(frame.image, frame.time)
    return out_path


def yuv_reencode(clip, out_path):
    """A plain re-encode, YUV planes straight to x264 as ffmpeg would do it: no RGB on the way."""
    import av

    with av.open(str(clip)) as inp, av.open(str(out_path), "w") as out:
        stream = inp.streams.video[0]
        video = out.add_stream("libx264", rate=stream.average_rate)
        video.width, video.height, video.pix_fmt = stream.width, stream.height, "yuv420p"
        for tag in ("colorspace", "color_primaries", "color_trc"):  # as ffmpeg carries them
            setattr(video.codec_context, tag, getattr(stream.codec_context, tag))
        video.options = {"crf": "18", "preset": "veryfast"}
        for frame in inp.decode(stream):
            frame.pts = None
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return out_path


def channel_bias(path, reference) -> np.ndarray:
    """Mean (R, G, B) difference of two files' frames as a player decodes them."""
    return (np.stack(read_frames(path)).astype(np.float64) - np.stack(read_frames(reference))).mean(axis=(0, 1, 2))


@pytest.mark.timeout(120)
def test_untouched_pixels_keep_their_colour_on_noisy_content(tmp_path):
    clip = write_clip(tmp_path / "noisy.mp4", noisy_frames(), fps=25)
    ours = channel_bias(restore_file(clip, tmp_path / "ours.mp4"), clip)
    plain = channel_bias(yuv_reencode(clip, tmp_path / "plain.mp4"), clip)
    # no worse than the compression alone; it was about -1.1, -1.3, -0.8 levels off
    assert np.all(np.abs(ours) < np.maximum(np.abs(plain), 0.2) + 0.3), (ours, plain)


@pytest.mark.timeout(120)
def test_untouched_pixels_keep_their_colour_in_a_bt709_video(tmp_path):
    """Phones and cameras tag HD video BT.709: the output must mean the same colours as the input."""
    import av

    clip = tmp_path / "hd.mp4"
    with av.open(str(clip), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.codec_context.colorspace = video.codec_context.color_primaries = video.codec_context.color_trc = 1
        video.options = {"crf": "12", "preset": "ultrafast"}
        for image in noisy_frames(3):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p", dst_colorspace=1)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    ours = channel_bias(restore_file(clip, tmp_path / "ours.mp4"), clip)
    plain = channel_bias(yuv_reencode(clip, tmp_path / "plain.mp4"), clip)
    # no worse than the compression alone; it was about -1.0, -1.5, -0.5 levels off (BT.601 read as BT.709)
    assert np.all(np.abs(ours) < np.maximum(np.abs(plain), 0.2) + 0.3), (ours, plain)


# ---------------------------------------------------------------- live mode


@pytest.mark.timeout(120)
def test_live_mode_drops_frames_under_a_slow_restorer_and_keeps_the_rate():
    fps, seconds, delay = 30.0, 2.0, 0.1
    # a face that stays in view all along (face_frames drifts out after about 40 frames)
    frames = [placed_face((320, 240), 0.9, (10.0 + 0.5 * i, -30.0 + 0.25 * i))[0] for i in range(int(fps * seconds))]
    camera = FakeCamera(frames, fps=fps)
    restore = SlowRestore(delay)
    sink = RecordingSink()
    pipeline = make_pipeline(restore=restore)
    try:
        report = run_live(pipeline, camera, sink)
    finally:
        close_all(pipeline)
    # The restorer can do ~10 frames/s: the rest are dropped, not queued.
    assert report.captured == len(frames) and not pipeline.stats.summary().get("no_face")
    assert len(restore.calls) == report.processed <= seconds / delay + 3
    assert report.dropped >= len(frames) - report.processed - 2
    assert report.processed + report.dropped >= report.captured - 1
    # The output keeps the camera's rate by repeating frames, and finishes on time (no backlog).
    assert report.repeated > 0
    assert report.sent == len(sink.frames)
    assert abs(report.sent - len(frames)) <= 6
    gaps = np.diff(sink.arrivals)
    assert np.median(gaps) == pytest.approx(1 / fps, rel=0.25)
    assert report.duration_s < seconds + 4 * delay
    # Latency: at most one camera frame of waiting beyond the model, plus one output tick.
    assert report.max_latency_s < delay + 3.0 / fps + 0.05
    assert sink.timestamps == pytest.approx([index / fps for index in range(report.sent)])


@pytest.mark.timeout(120)
def test_live_mode_tracks_the_next_frame_while_the_model_restores():
    tracked = threading.Semaphore(0)
    overlapped = []

    def restore(batch):  # returns only once a newer frame has been tracked meanwhile
        while tracked.acquire(blocking=False):
            pass
        overlapped.append(tracked.acquire(timeout=2.0))
        return invert_restore(batch)

    pipeline = make_pipeline(restore=restore)
    update = pipeline.tracker.update

    def counted_update(*args, **kwargs):
        result = update(*args, **kwargs)
        tracked.release()
        return result

    pipeline.tracker.update = counted_update
    try:
        report = run_live(pipeline, FakeCamera(face_frames(12), fps=30.0), RecordingSink(), max_frames=8)
    finally:
        close_all(pipeline)
    assert report.processed >= 3 and all(overlapped[:3])


@pytest.mark.timeout(120)
def test_live_mode_with_a_fast_restorer_shows_every_frame():
    frames = face_frames(30)
    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        report = run_live(pipeline, FakeCamera(frames, fps=20.0), sink)
    finally:
        close_all(pipeline)
    assert report.processed >= len(frames) - 2
    assert report.dropped <= 2


@pytest.mark.timeout(120)
def test_live_mode_plays_a_file_at_its_own_rate(face_clip):
    source = FileSource(face_clip)  # 20 frames at 25 fps = 0.8 s
    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        start = time.monotonic()
        report = run_live(pipeline, source, sink, max_frames=15)
        elapsed = time.monotonic() - start
    finally:
        close_all(pipeline)
    assert report.captured == 15
    assert 14 / 25.0 - 0.02 < elapsed < 15 / 25.0 + 1.0
    assert abs(report.sent - 15) <= 3


@pytest.mark.timeout(120)
def test_live_mode_passes_errors_to_the_caller():
    pipeline = make_pipeline(restore=FailingRestore(fail_at=2))
    try:
        with pytest.raises(RuntimeError, match="on purpose"):
            run_live(pipeline, FakeCamera(face_frames(20), fps=30.0), RecordingSink())
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_live_mode_keeps_the_virtual_camera_going_while_the_camera_hangs(capsys):
    from instantrestore.plugin.progress import say

    fps, stall_s = 30.0, 0.5
    first, second = face_frames(15), [frame[:, ::-1].copy() for frame in face_frames(15)]
    opened = []

    def open_camera():  # the first camera hangs after 15 frames; reopened, it works
        opened.append(FaultyCamera(second, fps=fps) if opened else FaultyCamera(first, fps=fps, fault="hang", after=15))
        return opened[-1]

    pyvirtualcam.register_backend("instantrestore-test-recorder", RecordingVirtualCamera)
    RecordingVirtualCamera.instances.clear()
    sink = VirtualCameraSink(320, 240, fps, backend="instantrestore-test-recorder")
    source = SteadyCamera(open_camera, stall_s=stall_s, notify=say)
    pipeline = make_pipeline()
    try:
        report = run_live(pipeline, source, sink, max_frames=40)
    finally:
        close_all(pipeline)
        sink.close()
        source.close()
        opened[0].close()  # its read still hangs: let its thread end
    err = capsys.readouterr().err
    assert "camera 0 has sent no frame for 0.5 s; reopening it" in err and "camera 0 is back after" in err
    assert len(opened) == 2 and report.captured == 40  # 15 frames, the hang, 25 from the reopened camera
    camera = RecordingVirtualCamera.instances[-1]
    # the hang: the last frame sent again and again, at the virtual camera's rate, for the whole stall
    frames = [frame.tobytes() for frame in camera.frames]
    runs = [index for index in range(1, len(frames)) if frames[index] != frames[index - 1]]
    longest = max(zip([0] + runs, runs + [len(frames)]), key=lambda run: run[1] - run[0])
    assert longest[1] - longest[0] >= 0.7 * stall_s * fps
    gaps = np.diff(camera.arrivals[longest[0]: longest[1]])
    assert np.median(gaps) == pytest.approx(1 / fps, rel=0.3) and gaps.max() < stall_s / 2


@pytest.mark.timeout(120)
def test_live_mode_ends_with_a_clear_error_when_the_camera_never_comes_back(capsys):
    from instantrestore.runtime.media import CameraUnavailable

    calls = []

    def open_camera():
        calls.append(1)
        if len(calls) > 1:
            raise CameraUnavailable("cannot open camera 0")
        return FaultyCamera(face_frames(5), fault="unplugged", after=5)

    source = SteadyCamera(open_camera, retry_s=1.0, retry_interval_s=0.2, notify=print)
    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        with pytest.raises(CameraUnavailable, match=r"camera 0 is gone: no frames for 1 s \(cannot open camera 0\)"):
            run_live(pipeline, source, sink)
    finally:
        close_all(pipeline)
        source.close()
    assert "reading camera 0 failed (camera 0 stopped delivering frames); reopening it" in capsys.readouterr().out
    assert 3 <= len(calls) <= 8 and len(sink.frames) >= 5


# ---------------------------------------------------------------- hooks for another thread (the control panel)


@pytest.mark.timeout(120)
def test_live_mode_stops_on_halt_and_shows_each_new_frame_to_on_frame():
    frames = face_frames(60)  # 3 s at 20 fps: the halt, not the end of the frames, stops it
    halt, seen = threading.Event(), []

    def on_frame(raw, shown, latency_s):
        seen.append((raw, shown, latency_s))
        if len(seen) == 4:
            halt.set()

    sink = RecordingSink()
    pipeline = make_pipeline()
    try:
        report = run_live(pipeline, FakeCamera(frames, fps=20.0), sink, halt=halt, on_frame=on_frame)
    finally:
        close_all(pipeline)
    assert len(seen) == 4 and report.captured < len(frames)
    raw, shown, latency_s = seen[0]
    assert any(np.array_equal(raw, frame) for frame in frames)  # the camera's own frame, beside
    assert np.array_equal(shown, sink.frames[0]) and not np.array_equal(shown, raw)  # what the camera sent
    assert latency_s >= 0


@pytest.mark.timeout(120)
def test_file_mode_shows_each_frame_to_on_frame_and_an_error_there_leaves_no_output(face_clip, tmp_path):
    source = FileSource(face_clip)
    out_path = tmp_path / "out.mp4"
    seen = []
    pipeline = make_pipeline()
    try:
        run_file(pipeline, source, FileSink(out_path, like=source), on_frame=lambda raw, out: seen.append((raw, out)))
    finally:
        close_all(pipeline)
    written = read_frames(out_path)
    assert len(seen) == len(written) == 20
    assert not np.array_equal(seen[0][0], seen[0][1])  # before and after differ: the face was restored

    class Cancel(Exception):
        pass

    def cancel(raw, out):
        raise Cancel()

    cancelled = tmp_path / "cancelled.mp4"
    source = FileSource(face_clip)
    pipeline = make_pipeline()
    try:
        with pytest.raises(Cancel):
            run_file(pipeline, source, FileSink(cancelled, like=source), on_frame=cancel)
    finally:
        close_all(pipeline)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no partial file, no temp file


# ------------------------------------------------------------------------------------------ the stage helper


@pytest.mark.timeout(120)
def test_the_first_stage_error_stops_the_others_and_is_raised():
    from instantrestore.runtime.pipeline import Stages

    stages, stopped = Stages(), threading.Event()

    def waits():
        stopped.set() if stages.stop.wait(timeout=10) else None

    def fails():
        time.sleep(0.05)
        raise MediaError("disk full")

    def fails_later():
        stages.stop.wait(timeout=10)
        raise RuntimeError("second")

    stages.start(waits, "waits")
    stages.start(fails_later, "later")
    stages.run(fails)
    stages.join(timeout=10)
    assert stopped.is_set() and [type(error) for error in stages.errors] == [MediaError, RuntimeError]
    with pytest.raises(MediaError, match="disk full"):
        stages.raise_first()


@pytest.mark.timeout(120)
def test_work_items_flow_through_the_file_runner_in_order(tmp_path):
    from instantrestore.runtime.media import MemorySource
    from instantrestore.runtime.pipeline import Batch

    batches = []
    pipeline = make_pipeline()
    restore_located = pipeline.restore_located

    def noting(located):
        batches.append(len(located))
        return restore_located(located)

    pipeline.restore_located = noting
    frames = face_frames(7)
    sink = RecordingSink()
    try:
        run_file(pipeline, MemorySource(frames, 25), sink, batch_size=3)
    finally:
        close_all(pipeline)
    assert batches == [3, 3, 1] and sink.closed
    assert sink.timestamps == [index / 25 for index in range(7)]
    batch = Batch(frames=[], images=[], located=[])
    assert batch.restored is None and batch.captured_at == 0.0


@pytest.mark.timeout(120)
def test_passthrough_sends_the_frames_as_they_are():
    frames = face_frames(5)
    sink = RecordingSink()
    report = run_live(None, FakeCamera(frames, fps=50.0), sink)
    assert report.captured == report.sent == 5 and report.processed == 0
    for sent, frame in zip(sink.frames, frames):
        np.testing.assert_array_equal(sent, frame)


@pytest.mark.timeout(120)
def test_live_preview_sees_the_raw_frame_unpasted():
    seen = []
    pipeline = make_pipeline()
    frames = face_frames(10)
    try:
        run_live(pipeline, FakeCamera(frames, fps=20.0), RecordingSink(),
                 on_frame=lambda raw, shown, latency: seen.append((raw.copy(), raw, shown)))
    finally:
        close_all(pipeline)
    assert seen
    for copied, raw, shown in seen:
        np.testing.assert_array_equal(copied, raw)
        assert raw is not shown and any(np.array_equal(raw, frame) for frame in frames)


SCENE_CROP, FPS = 128, 25.0


@pytest.fixture(scope="module")
def gallery():
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        face = max(detector.detect(astronaut()), key=lambda f: f.area)
    return {"eileen": shared_recognizer().embed(astronaut(), [face.box])}


def pipeline_for(gallery, tracker=None, record=None):
    tracker = tracker or Tracker(FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S))
    pipeline = FramePipeline({"eileen": lambda crops: 255 - crops}, SCENE_CROP, tracker=tracker, color_match=False,
                             identities=Identities(gallery))
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


# ---------------------------------------------------------------------------------------------- when


def cut_clip():
    """10 frames of her, then a cut to an empty room (skimage's coffee photo as the room)."""
    face = [placed_face((480, 360), 0.8, (60.0, 0.0))[0] for _ in range(10)]
    room = cv2.resize(no_face_image(480, 360), (480, 360))
    return face + [room] * 8


def walk_out_clip():
    """Her in front of a room for 10 frames, then the same room without her (she stepped out of view)."""
    room = cv2.resize(no_face_image(480, 360), (480, 360))
    her = np.ascontiguousarray(astronaut()[20:260, 100:340])
    with_her = room.copy()
    with_her[60:300, 120:360] = her
    return [with_her] * 10 + [room] * 8


@pytest.mark.timeout(300)
@pytest.mark.parametrize("clip", [cut_clip, walk_out_clip])
def test_no_paste_outlives_the_face(gallery, clip):
    frames = clip()
    for mode in (live, file_mode):
        changed = pasted(mode(pipeline_for(gallery), frames), frames)
        assert all(count > 500 for count in changed[:10]), (mode.__name__, changed)
        assert changed[10:] == [0] * 8, (mode.__name__, changed)  # the room is never painted on


def scripted_tracker(script):
    class Scripted:
        calls = 0

        def detect(self, frame, timestamp_s=None):
            faces = script[min(Scripted.calls, len(script) - 1)]
            Scripted.calls += 1
            return list(faces)

        def close(self):
            pass

    return Tracker(Scripted(), roi_scale=None)


@pytest.mark.timeout(300)
def test_a_detector_blink_fades_live_and_is_bridged_in_file_mode(gallery):
    """Her face stays in view, but the detector misses it on frames 4 and 5: live holds it and fades the paste
    out (it cannot know she is still there); file mode sees her found again on frame 6 and keeps the paste whole.
    When the detector loses her for good (frames 10-), live fades for two frames and file mode stops at once."""
    frame, matrix = placed_face((480, 360), 0.8, (60.0, 0.0))
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        seen = max(detector.detect(frame), key=lambda f: f.area)
    found = [FaceDetection(seen.keypoints, seen.box, seen.score)]
    script = [found] * 4 + [[]] * 2 + [found] * 4 + [[]] * 4
    frames = [frame] * len(script)
    changes = {}
    for mode in (live, file_mode):
        outputs = mode(pipeline_for(gallery, scripted_tracker(script)), frames)
        x0, y0, x1, y1 = (int(v) for v in seen.box)
        centre = (slice((y0 * 3 + y1) // 4, (y0 + y1 * 3) // 4), slice((x0 * 3 + x1) // 4, (x0 + x1 * 3) // 4))
        changes[mode.__name__] = [float(np.abs(o[centre].astype(np.int16) - f[centre]).mean())
                                  for o, f in zip(outputs, frames)]
    full = changes["live"][0]
    assert full > 60
    np.testing.assert_allclose(changes["live"][4:6], [full * 2 / 3, full / 3], rtol=0.05)  # fading out
    np.testing.assert_allclose(changes["live"][10:12], [full * 2 / 3, full / 3], rtol=0.05)
    assert changes["live"][12:] == [0.0, 0.0]
    np.testing.assert_allclose(changes["file_mode"][:10], [full] * 10, rtol=0.05)  # the blink bridged
    assert changes["file_mode"][10:] == [0.0] * 4  # never pasted where it was not found again


# --------------------------------------------------------------------------------------------- where

SCALE, SPEED = 1.3, 6.0  # her face about 133 pixels wide in 640x480; 6 pixels a frame is a head turn on a call


def path_frames(offsets, noise=2.0, seed=0):
    """Her photo placed at each (x, y) offset, with sensor noise: frames and the placements."""
    rng = np.random.default_rng(seed)
    frames, placements = [], []
    for offset in offsets:
        frame, matrix = placed_face((640, 480), SCALE, offset)
        frames.append(np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8))
        placements.append(matrix)
    return frames, placements


def paste_points(mode, gallery, frames) -> np.ndarray:
    """Where the paste put the crop's centre and its two upper corners, in frame pixels, per frame."""
    record = []
    mode(pipeline_for(gallery, record=record), frames)
    corners = np.array([[SCENE_CROP / 2, SCENE_CROP / 2], [0.0, 0.0], [SCENE_CROP, 0.0]])
    return np.array([apply_affine(invert_matrix(faces[0]), corners) for faces in record])


def trailing(mode, gallery) -> tuple:
    """(pixels, fraction of the face width) by which the paste trails her face moving at SPEED along x, measured
    while she moves steadily (frames 15 to 45 of 60): the paste's offset from where it sits on her still face,
    carried along her known path. She crosses the same ground rightwards and leftwards: the detector's own bias
    at a place is the same both ways and cancels, a trailing paste is behind her both ways and adds up."""
    still_frames, still_placements = path_frames([(-20.0, -40.0)] * 20, seed=1)
    still = paste_points(mode, gallery, still_frames)[10:].mean(axis=0)  # her face's point, still
    in_photo = apply_affine(np.linalg.inv(np.vstack([still_placements[0], [0, 0, 1]]))[:2], still)
    lags = []
    for direction, start in ((1.0, -120.0), (-1.0, 234.0)):
        frames, placements = path_frames([(start + direction * SPEED * index, -40.0) for index in range(60)])
        points = paste_points(mode, gallery, frames)
        expected = np.array([apply_affine(p, in_photo) for p in placements])
        lags.append(-direction * (points - expected)[15:45, :, 0].mean())  # positive: behind her
    lag = float(np.mean(lags))
    return lag, lag / (SCALE * 102.0)


def steadiness(mode, gallery) -> tuple:
    """Her holding still for 50 frames (after 15 to settle), with sensor noise: the largest move of the paste's
    points from their mean, and the largest move from one frame to the next."""
    frames, _ = path_frames([(-20.0, -40.0)] * 65, seed=2)
    points = paste_points(mode, gallery, frames)[15:]
    spread = np.linalg.norm(points - points.mean(axis=0), axis=2).max()
    return float(spread), float(np.linalg.norm(np.diff(points, axis=0), axis=2).max())


@pytest.mark.timeout(300)
def test_file_mode_paste_does_not_trail_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(file_mode, gallery)
    assert abs(fraction) <= 0.03, (pixels, fraction)
    spread, step = steadiness(file_mode, gallery)
    assert spread <= 0.5 and step <= 0.15, (spread, step)


@pytest.mark.timeout(300)
def test_live_paste_keeps_up_with_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(live, gallery)
    assert abs(fraction) <= 0.05, (pixels, fraction)
    spread, step = steadiness(live, gallery)
    assert spread <= 1.0 and step <= 0.3, (spread, step)


# ------------------------------------------------------------------------------------------ small faces


@pytest.mark.timeout(300)
def test_file_mode_restores_a_face_far_from_the_camera(gallery):
    """Her face 88 pixels wide in 1280x720 (a wide shot): short-range BlazeFace skips it; a recording is also
    searched with full-range BlazeFace, so she is restored there."""
    frame = np.full((720, 1280, 3), 120, np.uint8)
    frame[100:540, 400:840] = cv2.resize(astronaut(), (440, 440), interpolation=cv2.INTER_AREA)
    frames = [frame] * 6
    far = FramePipeline({"eileen": lambda crops: 255 - crops}, SCENE_CROP, color_match=False, far=True,
                        identities=Identities(gallery))
    try:
        sink = RecordingSink()
        run_file(far, MemorySource(frames, FPS), sink)
    finally:
        far.close()
    face = (slice(180, 240), slice(555, 615))  # the middle of her face
    assert all(np.abs(out[face].astype(np.int16) - frame[face]).mean() > 60 for out in sink.frames)
    assert far.stats.summary()["faces_restored"] == 6
    near = pipeline_for(gallery)  # the camera's detector: short-range only
    assert pasted(live(near, frames), frames) == [0] * 6


@pytest.mark.timeout(300)
def test_overlapping_faces_blend_without_seams():
    """Two real faces close together (her photo twice, 100 px apart), so their feathered edges overlap; one is
    restored red, the other blue. Where both masks weigh, the result does not depend on their order (each face by
    its own weight); pasting one over the other (as before) let the later one cover the first's edge."""
    from instantrestore.runtime.align import alignment_matrix, warp_to_crop
    from instantrestore.runtime.composite import Compositor, paste_back

    her = np.ascontiguousarray(astronaut()[40:230, 130:320])
    frame = np.full((200, 300, 3), 120, np.uint8)
    frame[5:195, 0:190], frame[5:195, 100:290] = her, her
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        faces = sorted(detector.detect(frame), key=lambda face: face.center[0])
    assert len(faces) == 2
    pastes, weights = [], []
    for face, colour in zip(faces, [(255, 0, 0), (0, 0, 255)]):
        matrix = alignment_matrix(face.keypoints, SCENE_CROP)
        pastes.append((np.full((SCENE_CROP, SCENE_CROP, 3), colour, np.uint8), matrix,
                       warp_to_crop(frame, matrix, SCENE_CROP), 1.0))
        white = np.full((SCENE_CROP, SCENE_CROP, 3), 255, np.uint8)
        weights.append(paste_back(np.zeros_like(frame), white, matrix, color_match=False)[:, :, 0] / 255.0)
    both = (weights[0] > 0.05) & (weights[1] > 0.05)
    assert both.sum() > 50, both.sum()  # the masks do overlap
    compositor = Compositor(color_match=False)
    one_way, other_way = compositor.many(frame, pastes), compositor.many(frame, pastes[::-1])
    np.testing.assert_array_equal(one_way, other_way)
    def one_over_the_other(order):  # as before: each paste covers the last one's edge
        covered = frame
        for crop, matrix, original, _ in order:
            covered = compositor(covered, crop, matrix, original_crop=original)
        return covered[both].astype(int)

    assert np.abs(one_over_the_other(pastes) - one_over_the_other(pastes[::-1])).max() >= 3


@pytest.mark.timeout(120)
def test_live_latency_runs_from_the_capture_to_the_frame_leaving_the_sink_with_its_95th_percentile():
    """A virtual camera whose write takes 40 ms (a slow driver): each frame's latency, timed here from the
    moment the camera gave it to the moment the sink's write returned, is what the runner reports: mean and
    95th percentile, in its report and in the stats line."""
    fps, write_s = 20.0, 0.04
    frames = face_frames(40)
    for index, frame in enumerate(frames):
        frame[:4, :4] = index  # which camera frame a sent frame came from, in a corner no face reaches
    given = {}

    class TimedCamera(FakeCamera):
        def __iter__(self):
            for item in super().__iter__():
                given[item.index] = time.monotonic()
                yield item

    class SlowSink(RecordingSink):
        def write(self, image, timestamp=None):
            time.sleep(write_s)
            super().write(image, timestamp)

    sink, shown = SlowSink(), []
    pipeline = make_pipeline()
    try:
        report = run_live(pipeline, TimedCamera(frames, fps=fps), sink,
                          on_frame=lambda raw, image, latency_s: shown.append((int(raw[0, 0, 0]), latency_s)))
    finally:
        close_all(pipeline)
    assert len(shown) >= 10
    sent_at = {}
    for image, arrival in zip(sink.frames, sink.arrivals):
        sent_at.setdefault(int(image[0, 0, 0]), arrival)  # its first sending; later ones are repeats
    timed_here = np.array([sent_at[index] - given[index] for index, _ in shown])
    reported = np.array([latency for _, latency in shown])
    assert np.abs(reported - timed_here).max() < 0.02  # the same span, up to the thread hand-offs
    assert reported.min() >= write_s  # the sink's write is inside it
    assert report.mean_latency_s == pytest.approx(reported.mean())
    assert report.p95_latency_s == pytest.approx(np.percentile(reported, 95))
    latency = pipeline.stats.latency()
    assert latency["p95_ms"] == pytest.approx(report.p95_latency_s * 1000)
    assert latency["mean_ms"] == pytest.approx(report.mean_latency_s * 1000)
    assert pipeline.stats.recent_latency_s(5) == pytest.approx(reported[-5:].mean())
    assert f"latency {latency['mean_ms']:.0f} ms (p95 {latency['p95_ms']:.0f})" in pipeline.stats.format_line()
