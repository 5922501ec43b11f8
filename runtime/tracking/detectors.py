"""Face detectors: MediaPipe BlazeFace (short-range, and short- plus full-range for recordings), and
`make_detector`, the one place a caller gets one.

The detector runs the BlazeFace models vendored in ``assets/`` through MediaPipe Tasks, so tracking works
offline.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from ..files import sha256_file
from .faces import DetectorAssetError, DetectorTimeout, FaceDetection, TrackingError, box_iou

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
BLAZEFACE_SHORT_RANGE = ASSET_DIR / "face_detection_short_range.tflite"
BLAZEFACE_SHORT_RANGE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
BLAZEFACE_FULL_RANGE = ASSET_DIR / "face_detection_full_range_sparse.tflite"
BLAZEFACE_FULL_RANGE_SHA256 = "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"

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

# threading's exit hooks run last-registered first, so this runs before concurrent.futures stops
# the dispatch threads MediaPipe needs to close a task; plain atexit would be too late.
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_open_detectors)
else:  # pragma: no cover
    atexit.register(_close_open_detectors)


class FaceDetector:
    """MediaPipe face detector returning FaceDetection objects in pixel coordinates.

    mode: "video" (timestamps must increase; what the tracker uses) or "image" (stills, enrollment).
    model_path: a BlazeFace ``.tflite`` model (default: the vendored short-range one, checked by its SHA-256).
    timeout_s: when set, every MediaPipe call runs on a worker thread and a call that does not return
        in time raises DetectorTimeout instead of hanging the caller.
    """

    def __init__(
        self,
        model_path=None,
        *,
        mode: str = "video",
        min_confidence: float = 0.5,
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
        self._task = self._call(self._create, model_path, min_confidence)
        with _OPEN_DETECTORS_LOCK:
            _OPEN_DETECTORS.add(self)

    def _create(self, model_path, min_confidence):
        try:
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as error:  # pragma: no cover - mediapipe is a dependency
            raise TrackingError(f"mediapipe is not installed: {error}") from error
        running_mode = vision.RunningMode.VIDEO if self.mode == "video" else vision.RunningMode.IMAGE
        try:
            path = (verify_asset(BLAZEFACE_SHORT_RANGE, BLAZEFACE_SHORT_RANGE_SHA256) if model_path is None
                    else _existing_file(model_path, "detector model"))
            options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                                 running_mode=running_mode, min_detection_confidence=min_confidence)
            return vision.FaceDetector.create_from_options(options)
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


def make_detector(mode: str = "video", *, far: bool = False, timeout_s: Optional[float] = 10.0):
    """The face detector for `mode` ("video": a tracker's, timestamps increase; "image": stills, enrollment).
    far: short- and full-range BlazeFace together (recordings: faces far from the camera too), else short-range.
    timeout_s: a hung MediaPipe call raises DetectorTimeout after this long instead of freezing the caller.
    The caller closes it."""
    if far:
        return NearAndFarDetector(mode, timeout_s)
    return FaceDetector(mode=mode, timeout_s=timeout_s)
