"""What the file source and the file sink both need to know about a video file: whether a path is one, how its
decoded pixels become RGB, and its pixel format in words."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from .base import MediaError, one_line

HDR_TRANSFERS = (16, 18)  # FFmpeg's AVColorTransferCharacteristic: SMPTE ST 2084 (PQ), ARIB STD-B67 (HLG)


# The AVFrame fields of a stream's colour description (matrix, primaries, transfer), carried from input to output.
COLOR_TAGS = ("colorspace", "color_primaries", "color_trc")
AVCOL_RANGE_JPEG = 2  # full-range YUV


def frame_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB by the BT.601 matrix that FileSink encodes with, rounded, so untouched pixels
    come out with the YUV values they came in with. (swscale's default yuv->rgb path truncates, about -1 level
    per channel; it also follows the stream's matrix tag, which FileSink's OpenCV conversion cannot.)"""
    import cv2
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    if frame.width % 2 or frame.height % 2:  # no 4:2:0 layout: swscale, with exact rounding
        return frame.reformat(format="rgb24", src_colorspace=Colorspace.ITU601,
                              interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND |
                              Interpolation.FULL_CHR_H_INT).to_ndarray()
    if frame.format.name != "yuv420p" or frame.color_range == AVCOL_RANGE_JPEG:  # 10-bit, 4:4:4, full range ...
        # to 8-bit limited-range 4:2:0; YUV stays in its own matrix (converting it would shift the colours)
        matrix = {} if frame.format.name.startswith("yuv") else {"dst_colorspace": Colorspace.ITU601}
        frame = frame.reformat(format="yuv420p", src_color_range=frame.color_range or None,
                               dst_color_range=ColorRange.MPEG,
                               interpolation=Interpolation.POINT | Interpolation.ACCURATE_RND, **matrix)
    return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)


def check_video_file(path: Path) -> None:
    """MediaError unless `path` is a file to read a video from, saying what it is instead (a FIFO or a device
    would block or never end; neither is opened)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise MediaError(f"video file not found: {path}") from None
    except OSError as error:
        raise MediaError(f"cannot read {path}: {error.strerror or one_line(error)}") from None
    if stat.S_ISREG(mode):
        return
    kind = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a device",
            stat.S_ISBLK: "a disk device", stat.S_ISSOCK: "a socket"}
    what = next((name for test, name in kind.items() if test(mode)), "not a regular file")
    raise MediaError(f"{path} is {what}, not a video file")


def pixel_words(pixel_format: str, full_range: bool) -> str:
    """A pixel format in words: "10-bit 4:2:0", "8-bit RGB", "8-bit palette" (", full range" for YUV)."""
    import av

    try:
        layout = av.VideoFormat(pixel_format, 64, 64)
    except (ValueError, av.FFmpegError):
        return pixel_format
    bits = max((component.bits for component in layout.components), default=8)
    if layout.has_palette:
        return f"{bits}-bit palette"
    if layout.is_rgb or len(layout.components) < 3:
        return f"{bits}-bit {'RGB' if layout.is_rgb else 'grey'}"
    chroma = layout.components[1]
    sampling = {(64, 64): "4:4:4", (32, 64): "4:2:2", (32, 32): "4:2:0", (16, 64): "4:1:1"}
    words = f"{bits}-bit {sampling.get((chroma.width, chroma.height), 'YUV')}"
    return words + (", full range" if full_range else "")
