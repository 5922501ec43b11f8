"""One frame pipeline for the live camera and for files: track -> align -> restore -> composite.

FramePipeline turns frames into restored frames. run_file drives it over every frame of a source with
its stages overlapped on three threads (the restorer never waits for decoding or encoding); run_live
runs capture, processing and output on three threads so a slow restorer costs frames, not latency or
output rate.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import threading
import time
from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np

from .align import alignment_matrix, warp_to_crop
from .composite import Compositor
from .errors import InstantRestoreError
from .media import Sink, Source
from .tracking import Tracker

STAGES = ("decode", "track", "align", "restore", "composite", "encode")


class PipelineError(InstantRestoreError, RuntimeError):
    """The pipeline was given bad input or the restorer returned something unusable."""


class PipelineStats:
    """Per-stage timings (seconds, last `window` samples kept) and frame counters. Thread-safe.

    Used by `instantrestore bench` (summary()) and by the --stats log and overlay (format_line(),
    draw()).
    """

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self._window = int(window)
        self.reset()

    def reset(self):
        with self._lock:
            self._samples = {stage: collections.deque(maxlen=self._window) for stage in STAGES}
            self._totals = {stage: 0.0 for stage in STAGES}
            self._counts = {stage: 0 for stage in STAGES}
            self.counters = collections.Counter()
            self._frame_times = collections.deque(maxlen=self._window)
            self._latencies = collections.deque(maxlen=self._window)

    def add(self, stage: str, seconds: float, frames: int = 1):
        """Record a stage duration; a batched call covering n frames counts as n frames of seconds/n."""
        if stage not in self._samples:
            raise PipelineError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        with self._lock:
            per_frame = seconds / max(1, frames)
            for _ in range(max(1, frames)):
                self._samples[stage].append(per_frame)
            self._totals[stage] += seconds
            self._counts[stage] += max(1, frames)

    @contextlib.contextmanager
    def time(self, stage: str, frames: int = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, frames)

    def count(self, name: str, n: int = 1):
        with self._lock:
            self.counters[name] += n

    def frame_done(self):
        """Mark one output frame, for the output rate estimate."""
        with self._lock:
            self.counters["frames"] += 1
            self._frame_times.append(time.perf_counter())

    def add_latency(self, seconds: float):
        """One shown frame's latency: from its capture to its leaving the sink."""
        with self._lock:
            self._latencies.append(float(seconds))

    def latency(self) -> Optional[dict]:
        """{"mean_ms", "p95_ms", "count"} over the last `window` shown frames, None before the first."""
        with self._lock:
            samples = np.array(self._latencies, np.float64) * 1000.0
        if samples.size == 0:
            return None
        return {"mean_ms": float(samples.mean()), "p95_ms": float(np.percentile(samples, 95)), "count": samples.size}

    def recent_latency_s(self, frames: int = 30) -> Optional[float]:
        """The mean latency of the last `frames` shown frames (about a second), None before the first."""
        with self._lock:
            recent = list(self._latencies)[-frames:]
        return sum(recent) / len(recent) if recent else None

    def fps(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def summary(self) -> dict:
        """{"stages": {stage: {count, mean_ms, p50_ms, p95_ms, total_s}}, "fps": ..., counters...}."""
        with self._lock:
            stages = {}
            for stage in STAGES:
                samples = np.array(self._samples[stage], np.float64) * 1000.0
                if self._counts[stage] == 0:
                    continue
                stages[stage] = {
                    "count": self._counts[stage],
                    "mean_ms": float(samples.mean()),
                    "p50_ms": float(np.percentile(samples, 50)),
                    "p95_ms": float(np.percentile(samples, 95)),
                    "total_s": self._totals[stage],
                }
            counters = dict(self.counters)
        latency = self.latency()
        return {"stages": stages, "fps": self.fps(), **({"latency": latency} if latency else {}), **counters}

    def format_line(self) -> str:
        summary = self.summary()
        parts = [f"{stage} {values['mean_ms']:.1f}" for stage, values in summary["stages"].items()]
        line = " | ".join(parts) + " ms"
        if summary["fps"]:
            line += f" | {summary['fps']:.1f} fps"
        if "latency" in summary:
            line += f" | latency {summary['latency']['mean_ms']:.0f} ms (p95 {summary['latency']['p95_ms']:.0f})"
        for name in ("no_face", "not_finite", "dropped", "repeated"):
            if summary.get(name):
                line += f" | {name} {summary[name]}"
        return line

    def draw(self, frame) -> np.ndarray:
        """A copy of frame with the stats line drawn in its top-left corner (for --stats overlays)."""
        import cv2

        canvas = np.array(frame, copy=True)
        text = self.format_line()
        scale = max(0.4, canvas.shape[1] / 1600.0)
        origin = (8, int(24 * scale + 8))
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas


class RestoredCrops(NamedTuple):
    """What a restore callable returns when it can tell which crops it could not restore: `finite[i]` is False
    where the model's output was NaN or infinite (damaged weights, an fp16 overflow). Such a crop is never
    pasted: its frame passes through unchanged and is counted as "not_finite"."""

    crops: np.ndarray  # (B, S, S, 3) uint8
    finite: np.ndarray  # (B,) bool


RestoreFn = Callable[[np.ndarray], "np.ndarray | RestoredCrops"]


class LocatedFace(NamedTuple):
    """A face of one frame, aligned: the frame->crop matrix, where its crop is (slot `slot` of `crops`, the buffer
    every face of its batch was warped into) and whose profile restores it (None: the pipeline's only restorer,
    when it runs without recognition)."""

    matrix: np.ndarray
    crops: np.ndarray  # (N, S, S, 3) uint8, each profile's faces in consecutive slots
    slot: int
    name: Optional[str] = None
    strength: float = 1.0  # below 1 while a face the detector missed is held: the paste fades out

    @property
    def crop(self) -> np.ndarray:
        """The (S, S, 3) crop, a view into the batch's buffer."""
        return self.crops[self.slot]


def _restorer_batch(faces: list) -> np.ndarray:
    """The crops of faces as one (B, S, S, 3) batch: a slice of their buffer when they fill consecutive slots of
    one (faces aligned together, as every batch of the runners and locate_batch is), else a stacked copy (faces
    gathered from separately aligned frames)."""
    first = faces[0]
    if all(face.crops is first.crops and face.slot == first.slot + k for k, face in enumerate(faces)):
        return first.crops[first.slot: first.slot + len(faces)]
    return np.stack([face.crop for face in faces])


# Faces smaller than this (the larger side of the detector's box, in frame pixels) are left as they are: too few
# pixels to recognise reliably or to restore into a 512-pixel crop (README "Small and several faces").
MIN_FACE_PIXELS = 40

# File mode places each face once this many later frames are tracked: the paste follows a moving face without
# trailing it (a local linear fit over +-12 frames, README "Where"), and a face the detector missed is only
# held when it is found again (never pasted where the face has gone).
LOOK_AHEAD = 12


def _local_linear(points: dict, index: int, half_window: int) -> Optional[np.ndarray]:
    """The keypoints at frame `index` from the detections {frame: (6, 2) keypoints} within +-half_window: a
    tricube-weighted straight-line fit over time (no lag for steady motion, noise averaged away on a still face).
    None when `index` has no detection and none comes after it (the face has gone)."""
    near = [(j - index, p) for j, p in points.items() if abs(j - index) <= half_window]
    if index not in points and not any(d > 0 for d, _ in near):
        return None
    d = np.array([d for d, _ in near], np.float64)
    p = np.stack([p for _, p in near]).astype(np.float64)
    w = (1.0 - (np.abs(d) / (half_window + 1.0)) ** 3) ** 3
    s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
    t0, t1 = np.tensordot(w, p, 1), np.tensordot(w * d, p, 1)
    det = s0 * s2 - s1 * s1
    if det <= 1e-9 * max(s0 * s2, 1e-12):  # one detection, or all at one time: nothing to fit a line to
        return (t0 / s0).astype(np.float32)
    return ((s2 * t0 - s1 * t1) / det).astype(np.float32)


class LookAhead:
    """File mode's tracking with look-ahead: push() frames in order, get back (item, frame, located) for the frames
    whose faces are now placed (LOOK_AHEAD frames later); flush() at the end. Placed frames are aligned
    batch_size at a time, so the crops of each run_file batch are warped into one buffer: push() returns whole
    batches, flush() the rest (the last batch may be short)."""

    def __init__(self, pipeline: "FramePipeline", half_window: int = LOOK_AHEAD, batch_size: int = 1):
        self.pipeline, self.half_window, self.batch_size = pipeline, int(half_window), int(batch_size)
        self._pending: collections.deque = collections.deque()
        self._placed: list = []  # (item, frame, [(keypoints, name, strength), ...]) waiting for a whole batch
        self._detections: dict[int, dict[int, np.ndarray]] = {}  # track id -> {frame index: raw keypoints}
        self._index = 0

    def push(self, item, frame, timestamp) -> list:
        frame = self.pipeline._check_frame(frame)
        observed = self.pipeline.observe(frame, timestamp)
        for track, _ in observed:
            if track.missed == 0:
                self._detections.setdefault(track.track_id, {})[self._index] = track.raw_keypoints
        self._pending.append((self._index, item, frame, observed))
        self._index += 1
        while len(self._pending) > self.half_window:
            self._placed.append(self._place(*self._pending.popleft()))
        return self._aligned(len(self._placed) - len(self._placed) % self.batch_size)

    def flush(self) -> list:
        self._placed.extend(self._place(*entry) for entry in self._pending)
        self._pending.clear()
        return self._aligned(len(self._placed))

    def _aligned(self, count: int) -> list:
        """The first `count` placed frames as (item, frame, located), aligned batch_size frames at a time."""
        done, self._placed = self._placed[:count], self._placed[count:]
        aligned = []
        for start in range(0, count, self.batch_size):
            batch = done[start: start + self.batch_size]
            located = self.pipeline._align([frame for _, frame, _ in batch], [faces for _, _, faces in batch])
            aligned.extend((item, frame, faces) for (item, frame, _), faces in zip(batch, located))
        return aligned

    def _place(self, index, item, frame, observed):
        faces = []
        for track, name in observed:
            keypoints = _local_linear(self._detections.get(track.track_id, {}), index, self.half_window)
            if keypoints is not None:
                faces.append((keypoints, name, 1.0))
        for points in self._detections.values():  # what no later frame's window needs
            for j in [j for j in points if j < index - self.half_window]:
                del points[j]
        self._detections = {tid: points for tid, points in self._detections.items() if points}
        return item, frame, faces


class FramePipeline:
    """Restores the faces in each frame.

    restore: a callable taking a (B, S, S, 3) uint8 RGB batch of aligned crops and returning the restored
        batch, same shape and dtype, or RestoredCrops (e.g. restorer.crop_restorer(profile)); with
        `identities`, a mapping from each enrolled name to such a callable. It must not write into the batch it
        is given: that is the faces' crops (slices of their batch's buffer), which compositing reads again.
    identities: an identity.Identities. With it, every face recognised as an enrolled person is restored with
        that person's profile and every other face passes through untouched. Without it, the tracker's main
        face is restored (no recognition: for callers that have no enrolled photos).
    crop_size: S, from the model bundle. tracker: a tracking.Tracker (default: vendored BlazeFace short-range;
        with far=True, for recordings, full-range too, which finds faces far from the camera).
    blend: 0..1 strength of the restored face. color_match: match the restored crop's colour to the
        original crop. Frames without a face are returned as they are (the same array).
    """

    def __init__(
        self,
        restore,
        crop_size: int,
        tracker: Optional[Tracker] = None,
        blend: float = 1.0,
        color_match: bool = True,
        stats: Optional[PipelineStats] = None,
        identities=None,
        far: bool = False,
    ):
        if identities is None and not callable(restore):
            raise PipelineError("restore must be a callable taking a (B, S, S, 3) uint8 batch")
        if identities is not None:
            restore = dict(restore) if isinstance(restore, Mapping) else {}
            missing = [name for name in identities.gallery if not callable(restore.get(name))]
            if missing:
                raise PipelineError(f"no restorer for the enrolled {', '.join(map(repr, missing))}")
        self.restore = restore
        self.identities = identities
        self.crop_size = int(crop_size)
        if self.crop_size < 8:
            raise PipelineError(f"crop size must be at least 8, got {crop_size}")
        self._owns_tracker = tracker is None
        self.tracker = tracker if tracker is not None else Tracker(far=far)
        self.compositor = Compositor(blend=blend, color_match=color_match)
        self.stats = stats if stats is not None else PipelineStats()
        self.last_matrix = None

    def _check_frame(self, frame) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise PipelineError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        return frame

    def _restore_batch(self, name, crops: np.ndarray) -> RestoredCrops:
        with self.stats.time("restore", frames=len(crops)):
            restored = (self.restore if self.identities is None else self.restore[name])(crops)
        finite = np.ones(len(crops), bool)
        if isinstance(restored, RestoredCrops):
            restored, finite = restored.crops, np.asarray(restored.finite, bool)
        restored = np.asarray(restored)
        if restored.shape != crops.shape or restored.dtype != np.uint8 or finite.shape != (len(crops),):
            raise PipelineError(
                f"restorer returned {restored.dtype} {restored.shape}, expected uint8 {crops.shape}"
            )
        return RestoredCrops(restored, finite)

    def observe(self, frame, timestamp) -> list:
        """Track and recognise one frame: [(track, name)] of the faces to restore (held ones too, missed > 0);
        counts the others by reason."""
        with self.stats.time("track"):
            if self.identities is None:
                track = self.tracker.update(frame, timestamp)
                return [] if track is None else [(track, None)]
            tracks = self.tracker.update_all(frame, timestamp)
            small = [t for t in tracks if max(t.box[2] - t.box[0], t.box[3] - t.box[1]) < MIN_FACE_PIXELS]
            if small:
                self.stats.count("too small", len(small))
                tracks = [t for t in tracks if t not in small]
            chosen = []
            for track, verdict in zip(tracks, self.identities.assign(frame, tracks)):
                if verdict.name is None:
                    self.stats.count(verdict.reason)
                else:
                    chosen.append((track, verdict.name))
            return chosen

    def _align(self, frames, faces) -> list:
        """[[LocatedFace, ...] per frame] for each frame's [(keypoints, name, strength), ...].

        Every crop is warped straight into its slot of one new (N, S, S, 3) buffer, each profile's faces in
        consecutive slots, so the restorer is handed slices of it instead of a stacked copy. A new buffer for each
        call, never a reused one: a run keeps several batches in flight (one in each stage and more waiting between
        them) and compositing reads each face's crop again (colour match) after the restore."""
        for frame_faces in faces:
            if not frame_faces:
                self.stats.count("no_face")
        listed = [(index, *face) for index, frame_faces in enumerate(faces) for face in frame_faces]
        located = [[] for _ in frames]
        if listed:
            names = list(dict.fromkeys(name for _, _, name, _ in listed))
            by_name = sorted(range(len(listed)), key=lambda i: names.index(listed[i][2]))  # stable: frame order
            slots = np.argsort(by_name)  # listed[i]'s slot
            crops = np.empty((len(listed), self.crop_size, self.crop_size, 3), np.uint8)
            with self.stats.time("align", frames=sum(1 for frame_faces in faces if frame_faces)):
                for (index, keypoints, name, strength), slot in zip(listed, slots.tolist()):
                    matrix = alignment_matrix(keypoints, self.crop_size)
                    warp_to_crop(frames[index], matrix, self.crop_size, out=crops[slot])
                    located[index].append(LocatedFace(matrix, crops, slot, name, strength))
        self.last_matrix = located[-1][0].matrix if located and located[-1] else None
        return located

    def look_ahead(self, batch_size: int = 1) -> LookAhead:
        """File mode's tracking, which places each frame's faces knowing the frames after it, and aligns them
        batch_size frames at a time."""
        return LookAhead(self, batch_size=batch_size)

    def process(self, frame, timestamp: Optional[float] = None) -> np.ndarray:
        """Restore the faces in one RGB uint8 frame; timestamp (s) drives the keypoint smoothing."""
        return self.process_batch([frame], [timestamp])[0]

    def process_batch(self, frames, timestamps=None) -> list:
        """Like process() for several consecutive frames, with one restorer call per profile for all faces."""
        frames, located = self.locate_batch(frames, timestamps)
        return self.composite_batch(frames, located, self.restore_located(located))

    # The three steps of process_batch, which run_file runs on three threads.

    def locate_batch(self, frames, timestamps=None) -> tuple[list, list]:
        """Check, track and align consecutive frames: (frames, [[LocatedFace, ...] per frame])."""
        frames = [self._check_frame(frame) for frame in frames]
        if timestamps is None:
            timestamps = [None] * len(frames)
        if len(timestamps) != len(frames):
            raise PipelineError(f"{len(frames)} frames but {len(timestamps)} timestamps")
        fade = 1.0 / (self.tracker.max_missed + 1)  # a held face fades out over the frames it is held
        faces = [[(track.keypoints, name, 1.0 - track.missed * fade) for track, name in self.observe(frame, stamp)]
                 for frame, stamp in zip(frames, timestamps)]
        return frames, self._align(frames, faces)

    def restore_located(self, located) -> Optional[RestoredCrops]:
        """The restored crops of every located face, in order (one restorer call per profile); None when no frame
        has a face to restore."""
        faces = [face for frame_faces in located for face in frame_faces]
        if not faces:
            return None
        size = self.crop_size
        crops, finite = np.empty((len(faces), size, size, 3), np.uint8), np.ones(len(faces), bool)
        for name in dict.fromkeys(face.name for face in faces):
            positions = [i for i, face in enumerate(faces) if face.name == name]
            restored = self._restore_batch(name, _restorer_batch([faces[i] for i in positions]))
            crops[positions], finite[positions] = restored.crops, restored.finite
        return RestoredCrops(crops, finite)

    def composite_batch(self, frames, located, restored: Optional[RestoredCrops], in_place: bool = False) -> list:
        """Each frame with its restored faces pasted back; frames without a face, or whose restored faces are not
        finite, are returned as they are. in_place: paste into the frames themselves (the runners, which own the
        frames they decoded or captured) instead of into copies."""
        outputs, slot = list(frames), 0
        for index, frame_faces in enumerate(located):
            pastes = []
            for face in frame_faces:
                if restored.finite[slot]:
                    pastes.append((restored.crops[slot], face.matrix, face.crop, face.strength))
                    self.stats.count("faces_restored")
                else:
                    self.stats.count("not_finite")
                slot += 1
            if pastes:
                with self.stats.time("composite"):
                    outputs[index] = self.compositor.many(frames[index], pastes,
                                                          out=frames[index] if in_place else None)
        return outputs

    def close(self):
        if self.identities is not None:
            self.identities.close()
        if self._owns_tracker:
            self.tracker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def identities_of(profiles: dict, live: bool):
    """Who the enrolled people are (profiles: name -> Profile). Live, recognition runs beside the frames; a
    recording waits for it, so its result never depends on timing."""
    from .identity import Identities

    return Identities({name: profile.embeddings for name, profile in profiles.items()}, background=live)


def face_pipeline(profiles: dict, restorers: dict, crop_size: int, blend: float = 1.0,
                  recording: bool = False) -> FramePipeline:
    """The frame pipeline restoring each recognised face with its own profile (profiles: name -> Profile;
    restorers: name -> crop restorer); faces of no one enrolled pass through untouched. A recording also looks
    for faces far from the camera (full-range BlazeFace); live, faces are recognised on a worker thread."""
    return FramePipeline(restorers, crop_size, blend=blend, identities=identities_of(profiles, live=not recording),
                         far=recording)


def restore_recording(restorers: dict, profiles: dict, crop_size: int, source, sink, blend: float = 1.0,
                      batch_size: int = 1, progress=None, on_frame=None) -> PipelineStats:
    """One recording through the face pipeline into an open sink (`video`, `batch`, the panel): the sink is
    finished, or aborted on any failure so no partial file is left. Returns the pipeline's stats."""
    try:
        with face_pipeline(profiles, restorers, crop_size, blend, recording=True) as pipeline:
            return run_file(pipeline, source, sink, progress=progress, batch_size=batch_size, on_frame=on_frame)
    except BaseException:
        sink.abort()  # run_file aborts too; this covers a failure before it starts
        raise


def _timed_frames(source: Source, stats: PipelineStats):
    iterator = iter(source)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        stats.add("decode", time.perf_counter() - start)
        yield item


class _Stopped(Exception):
    """Another stage of the run failed or was interrupted."""


class Stages:
    """The stages of one run, each on a thread of its own or on the caller's: the first error wins, sets `stop` so
    the other stages end, and is what raise_first() raises. A stage that sees the run stopped ends quietly
    (raising _Stopped, as its handoffs do, or returning)."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def _guarded(self, body):
        try:
            body()
        except _Stopped:
            pass
        except BaseException as error:  # handed to the caller, which stops the other stages
            self.errors.append(error)
            self.stop.set()

    def start(self, body, name: str) -> None:
        """Run body() on a thread of its own."""
        thread = threading.Thread(target=self._guarded, args=(body,), name=f"instantrestore-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def run(self, body) -> None:
        """Run body() on this thread, as one of the stages."""
        self._guarded(body)

    def join(self, timeout: Optional[float] = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


@dataclasses.dataclass
class Batch:
    """Consecutive frames on their way through a run's stages: as the source gave them, with their faces once
    located, with the restored crops once restored."""

    frames: list  # SourceFrame
    images: list  # each frame's checked image, which the restored faces are pasted into
    located: list  # [LocatedFace, ...] per frame, every crop a slot of one buffer (the restorer's batch)
    restored: Optional[RestoredCrops] = None
    captured_at: float = 0.0  # live: when the capture stage had it (for the latency)


class _Handoff:
    """A small bounded queue between two stages of run_file; waiting gives up once the run stops."""

    def __init__(self, stop: threading.Event, size: int = 2):
        self._queue = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item):
        while not self._stop.is_set():
            try:
                return self._queue.put(item, timeout=0.05)
            except queue.Full:
                pass
        raise _Stopped

    def get(self):
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        raise _Stopped


_END = object()


def run_file(pipeline: FramePipeline, source: Source, sink: Sink, progress=None, batch_size: int = 1,
             on_frame=None) -> PipelineStats:
    """Restore every frame of source, in order, into sink, then close the sink.

    Three stages overlap on three threads: decode + track + align, restore (this thread), composite +
    encode; so the restorer (the GPU) works on one batch while the CPU prepares the next and writes
    the last. batch_size > 1 sends several frames' faces to the restorer at once (throughput on a GPU).
    progress(done, total) is called after each written frame (total may be 0 if unknown), and
    on_frame(raw, restored) before it (a preview); an exception raised by either cancels the run.
    On any error the sink is aborted (no partial output file) and the error is raised.
    """
    if batch_size < 1:
        raise PipelineError(f"batch size must be at least 1, got {batch_size}")
    stats = pipeline.stats
    total = source.frame_count
    stages = Stages()
    to_restore, to_write = _Handoff(stages.stop), _Handoff(stages.stop)

    def prepare():
        ahead = pipeline.look_ahead(batch_size)

        def send(aligned):  # in the batches the look-ahead aligned together, each batch's crops in one buffer
            for start in range(0, len(aligned), batch_size):
                to_restore.put(Batch(*map(list, zip(*aligned[start: start + batch_size]))))

        for item in _timed_frames(source, stats):
            send(ahead.push(item, item.image, item.time))
        send(ahead.flush())
        to_restore.put(_END)

    def restore():
        while (batch := to_restore.get()) is not _END:
            batch.restored = pipeline.restore_located(batch.located)
            to_write.put(batch)
        to_write.put(_END)

    def finish():
        done = 0
        while (batch := to_write.get()) is not _END:
            # pasted into the decoded frames themselves, unless on_frame is to see them as they were
            outputs = pipeline.composite_batch(batch.images, batch.located, batch.restored, in_place=on_frame is None)
            for item, output in zip(batch.frames, outputs):
                with stats.time("encode"):
                    sink.write(output, item.time)
                stats.frame_done()
                done += 1
                if on_frame is not None:
                    on_frame(item.image, output)
                if progress is not None:
                    progress(done, total)

    try:
        stages.start(prepare, "prepare")
        stages.start(finish, "finish")
        stages.run(restore)
        stages.join()
        stages.raise_first()
        sink.close()
    except BaseException:
        stages.stop.set()
        stages.join(timeout=30.0)  # the writer must be done before the sink is aborted
        sink.abort()
        raise
    return stats


@dataclasses.dataclass
class LiveReport:
    """What happened during run_live. dropped: captured frames never processed plus processed frames
    replaced before they were shown; repeated: output ticks that re-sent the last frame."""

    captured: int = 0
    processed: int = 0
    sent: int = 0
    dropped: int = 0
    repeated: int = 0
    duration_s: float = 0.0
    max_latency_s: float = 0.0  # from capture to leaving the sink, of each newly shown frame
    mean_latency_s: float = 0.0
    p95_latency_s: float = 0.0


class _LatestSlot:
    """A one-item mailbox: putting replaces an unread item (which counts as dropped)."""

    def __init__(self):
        self._queue = queue.Queue(maxsize=1)

    def put(self, item) -> bool:
        """Returns True when an unread item was replaced."""
        replaced = False
        while True:
            try:
                self._queue.put_nowait(item)
                return replaced
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    replaced = True
                except queue.Empty:
                    pass

    def get(self, timeout: float):
        return self._queue.get(timeout=timeout)

    def get_nowait(self):
        return self._queue.get_nowait()

    def qsize(self) -> int:
        return self._queue.qsize()


def run_live(pipeline: Optional[FramePipeline], source: Source, sink: Sink, max_frames: Optional[int] = None,
             stats=None, fps=None, halt: Optional[threading.Event] = None, on_frame=None) -> LiveReport:
    """Camera-style run: capture + track + align, restore, and composite + output on separate threads.

    The capture thread tracks every frame and keeps only the newest for the restorer (older ones are
    dropped), so a frame waits at most one capture period before the model takes it. The output loop
    composites and sends each restored frame as soon as it is ready and re-sends the last one when
    nothing new comes within a frame period, so the call keeps the source's rate and never stalls. A
    source with live=False (a file) is played at its own frame rate. max_frames stops after that many
    captured frames; setting `halt` (another thread) stops the run as soon as it can. on_frame(raw,
    shown, latency_s) sees each newly shown frame (a preview). The sink is left open (the caller owns
    it). Returns a LiveReport; counts also go to stats.

    Without a pipeline (passthrough: the camera's own frames while the model loads, so call apps can already
    list and pick the virtual camera) each captured frame is sent as it is, from the capture thread.
    """
    stats = stats if stats is not None else pipeline.stats if pipeline is not None else PipelineStats()
    rate = float(fps or source.fps or 30.0)
    period = 1.0 / rate
    report = LiveReport()
    to_worker = _LatestSlot()
    to_output = _LatestSlot()
    capture_done = threading.Event()
    worker_done = threading.Event()
    stages = Stages()
    lock = threading.Lock()
    paced = not source.live

    def capture():
        try:
            start = time.monotonic()
            for item in source:
                if stages.stop.is_set():
                    break
                if paced:
                    delay = start + item.time - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                captured_at = time.monotonic()
                if pipeline is None:
                    sink.write(item.image, item.time)
                    report.sent += 1
                # tracked here, on every frame, so the worker only restores and the smoothing sees all motion
                elif to_worker.put(Batch([item], *pipeline.locate_batch([item.image], [item.time]),
                                         captured_at=captured_at)):
                    with lock:
                        report.dropped += 1
                    stats.count("dropped")
                with lock:
                    report.captured += 1
                if max_frames is not None and report.captured >= max_frames:
                    break
        finally:
            capture_done.set()

    def work():
        try:
            while not stages.stop.is_set():
                try:
                    batch = to_worker.get(timeout=0.02)
                except queue.Empty:
                    if capture_done.is_set() and to_worker.qsize() == 0:
                        break
                    continue
                batch.restored = pipeline.restore_located(batch.located)
                with lock:
                    report.processed += 1
                if to_output.put(batch):
                    with lock:
                        report.dropped += 1
                    stats.count("dropped")
        finally:
            worker_done.set()

    stages.start(capture, "capture")
    if pipeline is not None:
        stages.start(work, "restore")
    else:
        worker_done = capture_done  # nothing comes to the output loop: it waits for the capture to end

    latencies = []
    last_output = None
    last_sent_at = 0.0
    last_was_fresh = True
    started = time.monotonic()
    try:
        while not stages.errors and not (halt is not None and halt.is_set()):
            # A restored frame is sent as soon as it is ready. When none comes, the last one is sent
            # again: first after 1.25 periods (a little slack for a late result), then every period.
            if last_output is None:
                wait = 0.05
            else:
                due = last_sent_at + period * (1.25 if last_was_fresh else 1.0)
                wait = max(0.0, due - time.monotonic())
            # Read the flag before the mailbox: a result posted just before the worker ends is kept.
            finished = worker_done.is_set()
            try:
                batch = to_output.get(timeout=wait) if wait > 0 else to_output.get_nowait()
                fresh = True
            except queue.Empty:
                if finished:
                    break
                if last_output is None:
                    continue
                fresh = False
            if fresh:  # compositing here lets the worker start on the next frame meanwhile
                # pasted into the captured frame itself, unless on_frame is to see it as it was
                last_output = pipeline.composite_batch(batch.images, batch.located, batch.restored,
                                                       in_place=on_frame is None)[0]
            else:
                report.repeated += 1
                stats.count("repeated")
            with stats.time("encode"):
                sink.write(last_output, report.sent * period)
            if fresh:  # the latency that matters: from the capture to the frame leaving the sink
                latencies.append(time.monotonic() - batch.captured_at)
                stats.add_latency(latencies[-1])
                if on_frame is not None:
                    on_frame(batch.frames[0].image, last_output, latencies[-1])
            last_sent_at = time.monotonic()
            last_was_fresh = fresh
            report.sent += 1
            stats.frame_done()
    finally:
        stages.stop.set()
        stages.join(timeout=10.0)
    report.duration_s = time.monotonic() - started
    if latencies:
        report.max_latency_s = max(latencies)
        report.mean_latency_s = sum(latencies) / len(latencies)
        report.p95_latency_s = float(np.percentile(latencies, 95))
    stages.raise_first()
    return report
