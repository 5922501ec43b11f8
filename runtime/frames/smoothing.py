"""One smoothing policy per mode, decided here.

Live, a frame is placed as soon as it is tracked: the tracker's One Euro filter smooths each face's keypoints
(causal, little lag). A file is placed with look-ahead: each frame once LOOK_AHEAD later frames are tracked, by a
local line fit to the raw detections (LookAhead), so the tracker does not smooth at all there (its result would
be thrown away). Each runner calls use_smoothing() with its mode before its first frame.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np

LIVE, FILE = "live", "file"

# Whether the tracker smooths (One Euro), per mode; LookAhead does file mode's smoothing.
TRACKER_SMOOTHS = {LIVE: True, FILE: False}


def use_smoothing(tracker, mode: str) -> None:
    """Set the tracker's smoothing for a run in `mode` (LIVE or FILE)."""
    tracker.smooth = TRACKER_SMOOTHS[mode]


# File mode places each face once this many later frames are tracked: the paste follows a moving face without
# trailing it (a local linear fit over +-12 frames, README "Where"), and a face the detector missed is only
# held when it is found again (never pasted where the face has gone).
LOOK_AHEAD = 12


def local_linear(points: dict, index: int, half_window: int) -> Optional[np.ndarray]:
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

    def __init__(self, pipeline, half_window: int = LOOK_AHEAD, batch_size: int = 1):
        self.pipeline, self.half_window, self.batch_size = pipeline, int(half_window), int(batch_size)
        use_smoothing(pipeline.tracker, FILE)
        self._pending: collections.deque = collections.deque()
        self._placed: list = []  # (item, frame, [(keypoints, name, strength), ...]) waiting for a whole batch
        self._detections: dict[int, dict[int, np.ndarray]] = {}  # track id -> {frame index: raw keypoints}
        self._index = 0

    def push(self, item, frame, timestamp) -> list:
        frame = self.pipeline.check_frame(frame)
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
            located = self.pipeline.align([frame for _, frame, _ in batch], [faces for _, _, faces in batch])
            aligned.extend((item, frame, faces) for (item, frame, _), faces in zip(batch, located))
        return aligned

    def _place(self, index, item, frame, observed):
        faces = []
        for track, name in observed:
            keypoints = local_linear(self._detections.get(track.track_id, {}), index, self.half_window)
            if keypoints is not None:
                faces.append((keypoints, name, 1.0))
        for points in self._detections.values():  # what no later frame's window needs
            for j in [j for j in points if j < index - self.half_window]:
                del points[j]
        self._detections = {tid: points for tid, points in self._detections.items() if points}
        return item, frame, faces
