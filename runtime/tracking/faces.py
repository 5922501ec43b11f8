"""What detection and tracking talk in: a detected face, the Detector Protocol, this package's errors."""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from ..errors import InstantRestoreError

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
"""The six BlazeFace keypoints, in BlazeFace's order. "right" is the person's right (image left)."""


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

@runtime_checkable
class Detector(Protocol):
    """Finds faces in one RGB uint8 frame. timestamp_s: the frame's time, for detectors in video mode (they need it
    to increase); None for a still."""

    def detect(self, frame: np.ndarray, timestamp_s: Optional[float] = None) -> list[FaceDetection]: ...

    def close(self) -> None: ...

def box_iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
