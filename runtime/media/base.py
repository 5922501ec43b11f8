"""What every source and sink is: the `Source` and `Sink` Protocols, the frame a source hands out, and the
errors of this package. The runners use any source and sink through these alone, without probing."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator, NamedTuple, Optional, Protocol, runtime_checkable

import numpy as np

from ..errors import InstantRestoreError


class MediaError(InstantRestoreError):
    """A video file, camera or virtual camera cannot be read or written."""


class CameraUnavailable(MediaError):
    """The capture camera cannot be opened or stopped delivering frames."""


class VirtualCameraUnavailable(MediaError):
    """No virtual camera could be opened; the message carries pyvirtualcam's reason."""


class SourceFrame(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB, the receiver's own: the runners paste the restored faces into it
    time: float  # seconds since the first frame of the source
    index: int


@runtime_checkable
class Source(Protocol):
    """Where frames come from. live: a camera, which paces itself (a file is played at its fps by the live runner).
    frame_count: 0 when unknown or unbounded. device: the camera it reads (index or path), None for a file."""

    live: bool
    width: int
    height: int
    fps: Fraction
    frame_count: int
    device: object

    def __iter__(self) -> Iterator[SourceFrame]: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where frames go. close() finishes (a file is complete); abort() stops without finishing (a file sink leaves
    nothing behind; a live sink just closes)."""

    def write(self, image: np.ndarray, timestamp: Optional[float] = None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def one_line(error: BaseException) -> str:
    """An exception's text on one line (its type's name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def check_image(image, width, height) -> np.ndarray:
    """`image` as a contiguous array, or MediaError unless it is an RGB uint8 frame of (width, height)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (height, width, 3):
        raise MediaError(f"expected an RGB uint8 frame of shape ({height}, {width}, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class SourceNotFound(MediaError):
    """A source spec that names no camera, video file or other registered source."""


class SinkNotFound(MediaError):
    """A sink spec that names no registered sink."""
