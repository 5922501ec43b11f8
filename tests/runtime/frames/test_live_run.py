"""Live mode: a slow restorer costs frames, not rate; a hanging camera; halt and on_frame; passthrough; the latency
from capture to sink."""

import threading
import time

import numpy as np
import pytest
import pyvirtualcam

from instantrestore.runtime.frames.live_run import LiveOptions, run_live
from instantrestore.runtime.media import FileSource, SteadyCamera, VirtualCameraSink

from tests.support.media_helpers import (
    FailingRestore,
    FakeCamera,
    FaultyCamera,
    RecordingSink,
    RecordingVirtualCamera,
    SlowRestore,
    invert_restore,
    placed_face,
)
from tests.support.pipelines import close_all, face_frames, make_pipeline


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
        report = run_live(pipeline, FakeCamera(face_frames(12), fps=30.0), RecordingSink(), LiveOptions(max_frames=8))
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
        report = run_live(pipeline, source, sink, LiveOptions(max_frames=15))
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
        report = run_live(pipeline, source, sink, LiveOptions(max_frames=40))
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
        report = run_live(pipeline, FakeCamera(frames, fps=20.0), sink, LiveOptions(halt=halt, on_frame=on_frame))
    finally:
        close_all(pipeline)
    assert len(seen) == 4 and report.captured < len(frames)
    raw, shown, latency_s = seen[0]
    assert any(np.array_equal(raw, frame) for frame in frames)  # the camera's own frame, beside
    assert np.array_equal(shown, sink.frames[0]) and not np.array_equal(shown, raw)  # what the camera sent
    assert latency_s >= 0


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
                 LiveOptions(on_frame=lambda raw, shown, latency: seen.append((raw.copy(), raw, shown))))
    finally:
        close_all(pipeline)
    assert seen
    for copied, raw, shown in seen:
        np.testing.assert_array_equal(copied, raw)
        assert raw is not shown and any(np.array_equal(raw, frame) for frame in frames)


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
                          LiveOptions(on_frame=lambda raw, image, latency_s: shown.append((int(raw[0, 0, 0]),
                                                                                            latency_s))))
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
