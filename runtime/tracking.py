"""Face detection (MediaPipe BlazeFace) and temporal tracking of the six face keypoints.

The detector runs the BlazeFace short-range model vendored in ``assets/`` through MediaPipe Tasks, so
tracking works offline. Keypoints are smoothed with a One Euro filter so the aligned crop does not
jitter, and a track survives a few frames without a detection so a blink of the detector never
freezes or blanks the call.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import math
import threading
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from .errors import InstantRestoreError
from .files import sha256_file

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
"""The six BlazeFace keypoints, in BlazeFace's order. "right" is the person's right (image left)."""

ASSET_DIR = Path(__file__).resolve().parent / "assets"
BLAZEFACE_SHORT_RANGE = ASSET_DIR / "face_detection_short_range.tflite"
BLAZEFACE_SHORT_RANGE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
BLAZEFACE_FULL_RANGE = ASSET_DIR / "face_detection_full_range_sparse.tflite"
BLAZEFACE_FULL_RANGE_SHA256 = "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"

# FaceLandmarker (478-point mesh) indices mapped onto the six BlazeFace points. Eyes are the mean of
# their two corners, the mouth is the mean of the inner lips, the "ears" are the face-contour points
# next to the tragion.
_MESH_POINTS = (
    (33, 133),  # right eye: outer, inner corner
    (362, 263),  # left eye: inner, outer corner
    (1,),  # nose tip
    (13, 14),  # upper and lower inner lip
    (234,),  # right face contour at ear level
    (454,),  # left face contour at ear level
)


class TrackingError(InstantRestoreError):
    """Face detection or tracking cannot run (bad input, broken model, MediaPipe failure)."""


class DetectorAssetError(TrackingError):
    """The detector model file is missing or is not the expected file."""


class DetectorTimeout(TrackingError):
    """A MediaPipe call did not return within its time limit."""


@dataclasses.dataclass
class FaceDetection:
    """One detected face in frame pixels.

    keypoints: (6, 2) float32 x, y in the order of KEYPOINT_NAMES.
    box: (x0, y0, x1, y1) float pixels. score: detector confidence in 0..1.
    """

    keypoints: np.ndarray
    box: tuple
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    @property
    def center(self) -> tuple:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def shift(self, left: float, top: float) -> None:
        """Move a face detected in a region whose corner is at (left, top) into frame pixels."""
        self.keypoints = self.keypoints + np.array([left, top], np.float32)
        self.box = (self.box[0] + left, self.box[1] + top, self.box[2] + left, self.box[3] + top)


def _existing_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DetectorAssetError(f"{what} not found: {path}")
    return path


def verify_asset(path, expected_sha256: str) -> Path:
    """Return path if the file exists and has the expected SHA-256, else raise DetectorAssetError."""
    path = Path(path)
    if not path.is_file():
        raise DetectorAssetError(f"detector model not found: {path} (reinstall instantrestore)")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DetectorAssetError(
            f"detector model {path} is corrupted: SHA-256 {actual[:16]}... expected "
            f"{expected_sha256[:16]}... (reinstall instantrestore)"
        )
    return path


def _as_rgb_uint8(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise TrackingError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {frame.dtype} {frame.shape}"
        )
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise TrackingError(f"image too small for face detection: {frame.shape[1]}x{frame.shape[0]}")
    return np.ascontiguousarray(frame)


# Open detectors are held here until closed. MediaPipe closes a task from its finaliser by joining
# the task's own dispatch thread; if the garbage collector runs that finaliser on that very thread
# the process hangs. Holding a reference means a task is only ever closed by close() or at exit.
_OPEN_DETECTORS: set = set()
_OPEN_DETECTORS_LOCK = threading.Lock()


def _close_open_detectors():
    with _OPEN_DETECTORS_LOCK:
        detectors = list(_OPEN_DETECTORS)
    for detector in detectors:
        try:
            detector.close()
        except Exception:
            pass


@runtime_checkable
class Detector(Protocol):
    """Finds faces in one RGB uint8 frame. timestamp_s: the frame's time, for detectors in video mode (they need it
    to increase); None for a still."""

    def detect(self, frame: np.ndarray, timestamp_s: Optional[float] = None) -> list[FaceDetection]: ...

    def close(self) -> None: ...


# threading's exit hooks run last-registered first, so this runs before concurrent.futures stops
# the dispatch threads MediaPipe needs to close a task; plain atexit would be too late.
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_open_detectors)
else:  # pragma: no cover
    atexit.register(_close_open_detectors)


class FaceDetector:
    """MediaPipe face detector returning FaceDetection objects in pixel coordinates.

    mode: "video" (timestamps must increase; what the tracker uses) or "image" (stills, enrollment).
    landmarker_task: path to a MediaPipe FaceLandmarker ``.task`` file; when given it is used instead
        of BlazeFace and its mesh is reduced to the same six keypoints.
    timeout_s: when set, every MediaPipe call runs on a worker thread and a call that does not return
        in time raises DetectorTimeout instead of hanging the caller.
    """

    def __init__(
        self,
        model_path=None,
        *,
        mode: str = "video",
        min_confidence: float = 0.5,
        max_faces: int = 4,
        landmarker_task=None,
        timeout_s: Optional[float] = None,
    ):
        if mode not in ("video", "image"):
            raise TrackingError(f"detector mode must be 'video' or 'image', got {mode!r}")
        self.mode = mode
        self.timeout_s = timeout_s
        self._last_timestamp_ms = -1
        self._lock = threading.Lock()
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediapipe")
            if timeout_s is not None
            else None
        )
        self._task = None
        self._uses_landmarker = landmarker_task is not None
        self._task = self._call(self._create, model_path, min_confidence, max_faces, landmarker_task)
        with _OPEN_DETECTORS_LOCK:
            _OPEN_DETECTORS.add(self)

    def _create(self, model_path, min_confidence, max_faces, landmarker_task):
        try:
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as error:  # pragma: no cover - mediapipe is a dependency
            raise TrackingError(f"mediapipe is not installed: {error}") from error
        running_mode = vision.RunningMode.VIDEO if self.mode == "video" else vision.RunningMode.IMAGE
        try:
            if landmarker_task is not None:
                path = _existing_file(landmarker_task, "FaceLandmarker task file")
                task, task_options = vision.FaceLandmarker, vision.FaceLandmarkerOptions
                settings = {"num_faces": max_faces, "min_face_detection_confidence": min_confidence}
            else:
                path = (verify_asset(BLAZEFACE_SHORT_RANGE, BLAZEFACE_SHORT_RANGE_SHA256) if model_path is None
                        else _existing_file(model_path, "detector model"))
                task, task_options = vision.FaceDetector, vision.FaceDetectorOptions
                settings = {"min_detection_confidence": min_confidence}
            options = task_options(base_options=BaseOptions(model_asset_path=str(path)), running_mode=running_mode,
                                   **settings)
            return task.create_from_options(options)
        except TrackingError:
            raise
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DetectorAssetError(f"MediaPipe could not load the face model: {message}") from error

    def _call(self, function, *args):
        if self._executor is None:
            return function(*args)
        future = self._executor.submit(function, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise DetectorTimeout(f"MediaPipe did not answer within {self.timeout_s:.1f} s") from None

    def detect(self, frame, timestamp_s: Optional[float] = None) -> list:
        """Detect faces in an RGB uint8 frame. Returns a list of FaceDetection (possibly empty)."""
        frame = _as_rgb_uint8(frame)
        if self._task is None:
            raise TrackingError("face detector is closed")
        with self._lock:
            if self.mode == "video":
                # MediaPipe refuses timestamps that do not increase; repeated or missing times are
                # nudged forward by a millisecond.
                wanted = -1 if timestamp_s is None else int(round(timestamp_s * 1000.0))
                timestamp_ms = max(wanted, self._last_timestamp_ms + 1)
                self._last_timestamp_ms = timestamp_ms
            else:
                timestamp_ms = None
            result = self._call(self._run, frame, timestamp_ms)
        height, width = frame.shape[:2]
        if self._uses_landmarker:
            return _faces_from_landmarks(result, width, height)
        return _faces_from_detections(result, width, height)

    def _run(self, frame, timestamp_ms):
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)
        try:
            if timestamp_ms is None:
                return self._task.detect(image)
            return self._task.detect_for_video(image, timestamp_ms)
        except Exception as error:
            raise TrackingError(f"MediaPipe face detection failed: {error}") from error

    def close(self):
        task, self._task = self._task, None
        if task is not None:
            try:
                self._call(task.close)
            except DetectorTimeout:
                pass
            except Exception:
                # At interpreter exit the worker pool refuses new work; close on this thread instead.
                try:
                    task.close()
                except Exception:
                    pass
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        with _OPEN_DETECTORS_LOCK:
            _OPEN_DETECTORS.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class NearAndFarDetector:
    """Recordings: BlazeFace short-range (faces near the camera, its keypoints are the better ones) plus
    full-range for the faces far from it that short-range skips (under about a fifth of the frame width)."""

    def __init__(self, mode: str = "video", timeout_s: Optional[float] = None):
        self.near = FaceDetector(mode=mode, timeout_s=timeout_s)
        try:
            far = verify_asset(BLAZEFACE_FULL_RANGE, BLAZEFACE_FULL_RANGE_SHA256)
            # full-range also scores texture (a space suit: 0.5 to 0.65) where short-range sees nothing
            self.far = FaceDetector(far, mode=mode, timeout_s=timeout_s, min_confidence=0.7)
        except BaseException:
            self.near.close()
            raise

    def detect(self, frame, timestamp_s: Optional[float] = None) -> list:
        near = self.near.detect(frame, timestamp_s)
        far = [face for face in self.far.detect(frame, timestamp_s)
               if all(box_iou(face.box, other.box) <= 0.3 for other in near)]
        return near + far

    def close(self):
        self.near.close()
        self.far.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _faces_from_detections(result, width, height) -> list:
    faces = []
    for detection in result.detections or []:
        if not detection.keypoints or len(detection.keypoints) < 6:
            continue
        keypoints = np.array(
            [[point.x * width, point.y * height] for point in detection.keypoints[:6]], np.float32
        )
        box = detection.bounding_box
        score = float(detection.categories[0].score) if detection.categories else 1.0
        faces.append(
            FaceDetection(
                keypoints=keypoints,
                box=(
                    float(box.origin_x),
                    float(box.origin_y),
                    float(box.origin_x + box.width),
                    float(box.origin_y + box.height),
                ),
                score=score,
            )
        )
    return faces


def _faces_from_landmarks(result, width, height) -> list:
    faces = []
    for landmarks in result.face_landmarks or []:
        mesh = np.array([[point.x * width, point.y * height] for point in landmarks], np.float32)
        if len(mesh) <= max(max(group) for group in _MESH_POINTS):
            continue
        keypoints = np.stack([mesh[list(group)].mean(axis=0) for group in _MESH_POINTS]).astype(np.float32)
        x0, y0 = mesh.min(axis=0)
        x1, y1 = mesh.max(axis=0)
        faces.append(FaceDetection(keypoints=keypoints, box=(float(x0), float(y0), float(x1), float(y1)), score=1.0))
    return faces


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel, Vogel 2012) on arrays of any shape.

    A low-pass filter whose cutoff rises with speed: still keypoints are smoothed hard (no jitter),
    moving ones follow with little lag. min_cutoff (Hz) sets the smoothing at rest, beta how fast the
    cutoff grows with speed, d_cutoff (Hz) the smoothing of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, predict=None):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        # (slow, fast) speeds: above `slow` the filter's own lag is made up for by its speed estimate, fully from
        # `fast` on; a still value is never moved by it (its speed estimate is noise). None: no prediction.
        self.predict = predict
        self.reset()

    def reset(self):
        self._value = None
        self._speed = None
        self._time = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value, time_s: float) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None:
            self._value = value.copy()
            self._speed = np.zeros_like(value)
            self._raw, self._raw_speed = value.copy(), np.zeros_like(value)
            self._time = float(time_s)
            return self._value.copy()
        dt = float(time_s) - self._time
        if dt <= 0:
            # Same or earlier timestamp: nothing to integrate over; assume a nominal 30 fps step.
            dt = 1.0 / 30.0
        self._time = float(time_s)
        speed = (value - self._value) / dt
        alpha_d = self._alpha(self.d_cutoff, dt)
        self._speed = alpha_d * speed + (1.0 - alpha_d) * self._speed
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        alpha = self._alpha(cutoff, dt)
        self._value = alpha * value + (1.0 - alpha) * self._value
        if self.predict is None:
            return self._value.copy()
        # The speed of the input itself (the One Euro speed, taken against the smoothed value, overstates it by
        # the lag); at a steady speed v an exponential smoother trails by v * dt * (1 - alpha) / alpha.
        raw_speed = (value - self._raw) / dt
        self._raw = value
        self._raw_speed = alpha_d * raw_speed + (1.0 - alpha_d) * self._raw_speed
        slow, fast = self.predict
        weight = np.clip((np.abs(self._raw_speed) - slow) / (fast - slow), 0.0, 1.0)
        return self._value + weight * self._raw_speed * dt * (1.0 - alpha) / alpha


@dataclasses.dataclass
class Track:
    """The tracked face for one frame: smoothed keypoints plus the detection they came from."""

    keypoints: np.ndarray  # (6, 2) float32, smoothed
    raw_keypoints: np.ndarray  # (6, 2) float32, as detected (last detection when missed > 0)
    box: tuple
    score: float
    missed: int  # frames since the last detection; 0 when detected in this frame
    track_id: int


def box_iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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

    detector: a Detector (default: the vendored BlazeFace short-range in video mode; with far=True, short- and
        full-range together).
    choose_face: ``choose_face(faces, frame) -> FaceDetection | None``: update()'s choice of main face.
    max_missed: frames a track survives without a detection (keeps the last keypoints), and only while the
        picture under it still looks like the face that was there (a cut or a person leaving ends it at once).
    roi_scale: a followed face is detected again in a square of this many face sizes around it
        (BlazeFace sees the whole frame at 128x128, so a small face gets few input pixels and
        noisy keypoints). None: the full frame only.
    min_cutoff, beta, d_cutoff: One Euro parameters; speed is measured in face sizes per second so
        the same values work at any resolution and face size.
    """

    def __init__(
        self,
        detector: Optional[Detector] = None,
        *,
        choose_face: Optional[ChooseFace] = None,
        max_missed: int = 2,
        roi_scale: Optional[float] = 2.5,
        min_cutoff: float = 0.2,
        beta: float = 1.0,
        d_cutoff: float = 1.0,
        predict=(0.15, 0.5),
        far: bool = False,
    ):
        # Defaults tuned on BlazeFace with sensor noise: under a pixel of crop jitter at S=512 on a
        # still face, while a face moving a face-width per second stays within ~10% of it.
        self._owns_detector = detector is None
        # A hung MediaPipe graph then raises DetectorTimeout instead of freezing the call.
        if detector is None:
            detector = NearAndFarDetector("video", 10.0) if far else FaceDetector(mode="video", timeout_s=10.0)
        self.detector = detector
        self.choose_face = choose_face
        self.max_missed = int(max_missed)
        self.roi_scale = roi_scale
        self._filter_settings = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, predict=predict)
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
                         OneEuroFilter(**self._filter_settings), max(face.size, 1.0))
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
