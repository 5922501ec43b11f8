"""File mode: frames, rate, duration and audio kept; failures leave no partial output; stages overlap; untouched
pixels keep their colour."""

import hashlib
import os
import threading
from fractions import Fraction

import numpy as np
import pytest

from instantrestore.runtime.frames.file_run import run_file
from instantrestore.runtime.media import FileSink, FileSource, MediaError, MemorySource

from tests.support.media_helpers import (
    FailingRestore,
    RecordingSink,
    audio_packets,
    invert_restore,
    no_face_image,
    read_frames,
    stream_info,
    write_clip,
)
from tests.support.pipelines import close_all, face_frames, make_pipeline


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


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


@pytest.mark.timeout(120)
def test_work_items_flow_through_the_file_runner_in_order(tmp_path):
    from instantrestore.runtime.media import MemorySource
    from instantrestore.runtime.frames.work import Batch

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
