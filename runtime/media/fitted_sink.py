"""A sink that writes each frame at another size: a camera that delivers another size than the output's."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .base import Sink


def fit_frame(image: np.ndarray, size: tuple) -> np.ndarray:
    """The frame at (width, height), never stretched: a frame of another shape is cropped around its centre to the
    output's shape first (a 4:3 camera in a 16:9 output loses strips at the top and bottom, as call apps crop),
    then scaled."""
    width, height = size
    frame_height, frame_width = image.shape[:2]
    if frame_width * height > frame_height * width:  # wider than the output: crop the sides
        keep = int(round(frame_height * width / height))
        left = (frame_width - keep) // 2
        image = image[:, left: left + keep]
    elif frame_width * height < frame_height * width:  # taller: crop the top and bottom
        keep = int(round(frame_width * height / width))
        top = (frame_height - keep) // 2
        image = image[top: top + keep]
    if image.shape[1] == width and image.shape[0] == height:
        return image
    import cv2

    shrinking = image.shape[1] > width
    return cv2.resize(np.ascontiguousarray(image), size,
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class FittedSink:
    """Writes each frame to `sink` at `size` (width, height), cropped and scaled by fit_frame: a camera that
    delivers another size than the virtual camera's."""

    def __init__(self, sink: Sink, size: tuple):
        self.sink, self.size = sink, (int(size[0]), int(size[1]))

    def write(self, image, timestamp: Optional[float] = None):
        self.sink.write(fit_frame(image, self.size), timestamp)

    def close(self):
        self.sink.close()

    def abort(self):
        self.sink.abort()
