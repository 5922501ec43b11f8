"""Face detection (MediaPipe BlazeFace) and temporal tracking of the six face keypoints.

faces.py: a detected face, the Detector Protocol, the errors. detectors.py: the MediaPipe detectors and
make_detector, the one place a caller gets one. smoothing.py: the One Euro filter. tracker.py: the Tracker, which
takes a detector, follows every face and smooths its keypoints so the aligned crop does not jitter; a track
survives a few frames without a detection, so a blink of the detector never freezes or blanks the call.
"""

from .detectors import (ASSET_DIR, BLAZEFACE_FULL_RANGE, BLAZEFACE_FULL_RANGE_SHA256, BLAZEFACE_SHORT_RANGE,
                        BLAZEFACE_SHORT_RANGE_SHA256, FaceDetector, NearAndFarDetector, make_detector, verify_asset)
from .faces import (KEYPOINT_NAMES, Detector, DetectorAssetError, DetectorTimeout, FaceDetection, TrackingError,
                    box_iou)
from .smoothing import OneEuroFilter, Smoothing
from .tracker import (HOLD_CHANGE, NEW_FACE_EVERY, ChooseFace, Track, Tracker, detect_near, largest_central_face,
                      refine_near)

__all__ = [
    "ASSET_DIR", "BLAZEFACE_FULL_RANGE", "BLAZEFACE_FULL_RANGE_SHA256", "BLAZEFACE_SHORT_RANGE",
    "BLAZEFACE_SHORT_RANGE_SHA256", "KEYPOINT_NAMES", "ChooseFace", "Detector", "DetectorAssetError",
    "DetectorTimeout", "FaceDetection", "FaceDetector", "HOLD_CHANGE", "NEW_FACE_EVERY", "NearAndFarDetector",
    "OneEuroFilter", "Smoothing", "Track", "Tracker", "TrackingError", "box_iou", "detect_near",
    "largest_central_face", "make_detector", "refine_near", "verify_asset",
]
