"""The work item of a run and a face located in its frame."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from ..errors import InstantRestoreError
from ..restored import RestoredCrops


class PipelineError(InstantRestoreError, RuntimeError):
    """The pipeline was given bad input or the restorer returned something unusable."""


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


def restorer_batch(faces: list) -> np.ndarray:
    """The crops of faces as one (B, S, S, 3) batch: a slice of their buffer when they fill consecutive slots of
    one (faces aligned together, as every batch of the runners and locate_batch is), else a stacked copy (faces
    gathered from separately aligned frames)."""
    first = faces[0]
    if all(face.crops is first.crops and face.slot == first.slot + k for k, face in enumerate(faces)):
        return first.crops[first.slot: first.slot + len(faces)]
    return np.stack([face.crop for face in faces])


@dataclasses.dataclass
class Batch:
    """Consecutive frames on their way through a run's stages: as the source gave them, with their faces once
    located, with the restored crops once restored."""

    frames: list  # SourceFrame
    images: list  # each frame's checked image, which the restored faces are pasted into
    located: list  # [LocatedFace, ...] per frame, every crop a slot of one buffer (the restorer's batch)
    restored: Optional[RestoredCrops] = None
    captured_at: float = 0.0  # live: when the capture stage had it (for the latency)
