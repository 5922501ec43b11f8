"""Temporal tracking of every face in view: detection near where each face was, One Euro smoothing per face,
short gaps held while the picture under a face still looks like it."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from .detectors import make_detector
from .faces import Detector, FaceDetection, box_iou
from .smoothing import OneEuroFilter, Smoothing


@dataclasses.dataclass
class Track:
    """The tracked face for one frame: smoothed keypoints plus the detection they came from."""

    keypoints: np.ndarray  # (6, 2) float32, smoothed
    raw_keypoints: np.ndarray  # (6, 2) float32, as detected (last detection when missed > 0)
    box: tuple
    score: float
    missed: int  # frames since the last detection; 0 when detected in this frame
    track_id: int

def largest_central_face(faces: Sequence[FaceDetection], frame) -> Optional[FaceDetection]:
    """Default face choice: the largest face, discounted by its distance from the frame centre."""
    if not faces:
        return None
    height, width = np.asarray(frame).shape[:2]
    half_diagonal = math.hypot(width, height) / 2.0

    def weight(face):
        cx, cy = face.center
        off_centre = math.hypot(cx - width / 2.0, cy - height / 2.0) / half_diagonal
        return face.area * (1.0 - 0.5 * off_centre)

    return max(faces, key=weight)


def detect_near(detector, frame, box, roi_scale: float = 2.5, timestamp_s=None) -> list:
    """Detect faces in a square of roi_scale face sizes around box; results in frame pixels.

    BlazeFace sees the whole frame at 128x128, so a face that is small in the frame gets few input
    pixels and coarse keypoints; looking again at a region around it gives steadier keypoints.
    Returns [] when the region would be most of the frame anyway (nothing to gain) or too small.
    """
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = box
    side = int(round(roi_scale * max(x1 - x0, y1 - y0)))
    if side >= 0.8 * min(width, height) or side < 16:
        return []
    left = int(round((x0 + x1) / 2.0 - side / 2.0))
    top = int(round((y0 + y1) / 2.0 - side / 2.0))
    # Pure translation; outside the frame is black, which BlazeFace ignores.
    shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
    region = cv2.warpAffine(frame, shift, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    faces = detector.detect(region, timestamp_s)
    for face in faces:
        face.shift(left, top)
    return faces


def refine_near(detector, frame, face: FaceDetection, roi_scale: float = 2.5, timestamp_s=None) -> FaceDetection:
    """The same face detected again in a region around it (see detect_near), or face itself."""
    nearby = detect_near(detector, frame, face.box, roi_scale, timestamp_s)
    nearby = [candidate for candidate in nearby if box_iou(candidate.box, face.box) > 0.3]
    if not nearby:
        return face
    return max(nearby, key=lambda candidate: box_iou(candidate.box, face.box))


ChooseFace = Callable[[Sequence[FaceDetection], np.ndarray], Optional[FaceDetection]]


@dataclasses.dataclass
class _Follow:
    """One followed face: its current Track and its own smoothing (in units of its size at the start)."""

    track: Track
    filter: OneEuroFilter
    unit: float
    patch: Optional[np.ndarray] = None  # what the face looked like when last detected (see _still_there)


NEW_FACE_EVERY = 3  # frames between full-frame searches for new faces while all followed faces are found

# A held face's box may change by this much (mean grey level, in a 16x16 thumbnail) and still be taken for the
# face the detector blinked on; a cut or a person walking out changes it far more.
HOLD_CHANGE = 18.0


def _patch(frame, box) -> Optional[np.ndarray]:
    height, width = frame.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(math.ceil(box[2]))), min(height, int(math.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


class Tracker:
    """Follows every face over frames: detection, One Euro smoothing per face, short gaps.

    update_all() returns every followed face (the frame pipeline restores each one recognised as an enrolled
    person); update() returns one of them, the main face (kept while it is seen; else the largest central
    face, or choose_face's pick).

    detector: a Detector (make_detector("video") gives the vendored BlazeFace; the caller closes the detector it
        passes). None, for callers not yet passing one: make_detector("video", far=far), closed with the tracker.
    choose_face: ``choose_face(faces, frame) -> FaceDetection | None``: update()'s choice of main face.
    max_missed: frames a track survives without a detection (keeps the last keypoints), and only while the
        picture under it still looks like the face that was there (a cut or a person leaving ends it at once).
    roi_scale: a followed face is detected again in a square of this many face sizes around it
        (BlazeFace sees the whole frame at 128x128, so a small face gets few input pixels and
        noisy keypoints). None: the full frame only.
    smoothing: the One Euro settings of each face's keypoints.
    """

    def __init__(self, detector: Optional[Detector] = None, *, choose_face: Optional[ChooseFace] = None,
                 max_missed: int = 2, roi_scale: Optional[float] = 2.5, smoothing: Smoothing = Smoothing(),
                 far: bool = False):
        self._owns_detector = detector is None
        self.detector = make_detector("video", far=far) if detector is None else detector
        self.choose_face = choose_face
        self.max_missed = int(max_missed)
        self.roi_scale = roi_scale
        self.smoothing = smoothing
        self.smooth = True  # One Euro on the keypoints; the frame pipeline's smoothing policy sets it per mode
        self._follows: list[_Follow] = []
        self._main_id: Optional[int] = None
        self._next_id = 0
        self._frame_index = 0

    @property
    def track(self) -> Optional[Track]:
        """The main face's track, as update() last returned it."""
        return next((f.track for f in self._follows if f.track.track_id == self._main_id), None)

    @property
    def tracks(self) -> list:
        return [f.track for f in self._follows]

    def reset(self):
        self._follows = []
        self._main_id = None

    def _seen_again(self, follow: _Follow, frame, full_frame, timestamp_s) -> Optional[FaceDetection]:
        """This face in this frame: detected near where it was, else the full-frame detection over it."""
        box = follow.track.box
        if self.roi_scale is not None:
            nearby = detect_near(self.detector, frame, box, self.roi_scale, timestamp_s)
            nearby = [(box_iou(face.box, box), face) for face in nearby]
            nearby = [pair for pair in nearby if pair[0] > 0.3]
            if nearby:
                return max(nearby, key=lambda pair: pair[0])[1]
        overlaps = [(box_iou(face.box, box), face) for face in full_frame()]
        overlaps = [pair for pair in overlaps if pair[0] > 0.3]
        return max(overlaps, key=lambda pair: pair[0])[1] if overlaps else None

    @staticmethod
    def _still_there(follow: _Follow, frame) -> bool:
        """Whether the face the detector missed is plausibly still under its box."""
        now = _patch(frame, follow.track.box)
        if follow.patch is None or now is None:
            return False
        return float(np.abs(now - follow.patch).mean()) <= HOLD_CHANGE

    def _smoothed(self, follow: _Follow, face: FaceDetection, timestamp_s) -> Track:
        keypoints = face.keypoints.astype(np.float64)
        if self.smooth:  # off where the keypoints are smoothed otherwise (file mode's look-ahead fit)
            keypoints = follow.filter(keypoints / follow.unit, timestamp_s) * follow.unit
        return Track(keypoints=keypoints.astype(np.float32), raw_keypoints=face.keypoints.astype(np.float32),
                     box=face.box, score=face.score, missed=0, track_id=follow.track.track_id)

    def _start(self, face: FaceDetection, frame, timestamp_s) -> _Follow:
        if self.roi_scale is not None:
            # Start the track from a detection near the face too, so the next frames (detected
            # near the track) do not pull the smoothed keypoints by the full-frame detection's bias.
            face = refine_near(self.detector, frame, face, self.roi_scale, timestamp_s)
        self._next_id += 1
        follow = _Follow(Track(face.keypoints, face.keypoints, face.box, face.score, 0, self._next_id),
                         self.smoothing.new_filter(), max(face.size, 1.0))
        follow.track = self._smoothed(follow, face, timestamp_s)
        follow.patch = _patch(frame, face.box)
        return follow

    def update_all(self, frame, timestamp_s: Optional[float] = None) -> list:
        """Detect in this frame; every followed face's Track (held ones with missed > 0), oldest first."""
        if timestamp_s is None:
            timestamp_s = self._frame_index / 30.0
        self._frame_index += 1
        faces = None

        def full_frame():
            nonlocal faces
            if faces is None:
                faces = self.detector.detect(frame, timestamp_s)
            return faces

        kept, taken = [], []
        for follow in self._follows:
            face = self._seen_again(follow, frame, full_frame, timestamp_s)
            if face is not None and any(box_iou(face.box, other) > 0.3 for other in taken):
                face = None  # two tracks on one face: the older keeps it
            if face is None:
                if follow.track.missed + 1 > self.max_missed or not self._still_there(follow, frame):
                    continue
                follow.track = dataclasses.replace(follow.track, missed=follow.track.missed + 1)
            else:
                follow.track = self._smoothed(follow, face, timestamp_s)
                follow.patch = _patch(frame, face.box)
                taken.append(face.box)
            kept.append(follow)
        # New faces are looked for in the whole frame every few frames while every followed face is found near
        # where it was (one detection per face and frame, as with a single face), and on every other frame.
        if faces is None and (not self._follows or self._frame_index % NEW_FACE_EVERY == 1):
            full_frame()
        for face in faces or []:
            if all(box_iou(face.box, other) <= 0.3 for other in taken):
                kept.append(self._start(face, frame, timestamp_s))
                taken.append(face.box)
        self._follows = kept
        return self.tracks

    def update(self, frame, timestamp_s: Optional[float] = None) -> Optional[Track]:
        """Detect in this frame and return the main face's track, or None when no face is followed."""
        tracks = self.update_all(frame, timestamp_s)
        main = self.track
        seen = [track for track in tracks if track.missed == 0]
        if main is not None and (main.missed == 0 or not seen):
            return main
        if not seen:
            self._main_id = None
            return None
        candidates = [FaceDetection(t.raw_keypoints, t.box, t.score) for t in seen]
        if self.choose_face is not None:
            chosen = self.choose_face(candidates, frame)
        else:
            chosen = largest_central_face(candidates, frame)
        if chosen is None:
            self._main_id = None
            return None
        self._main_id = next(t.track_id for t, c in zip(seen, candidates) if c is chosen)
        return self.track

    def close(self):
        if self._owns_detector:
            self.detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
