"""Pasting a restored crop back into the frame.

The restored crop is warped back with the inverse of the alignment transform, through a feathered
face mask defined in crop space, after matching its colour statistics to the original crop so the
face sits in the frame's lighting. Work is limited to the face's bounding region, so the cost does not
grow with the frame size, and every pixel the mask does not touch is left exactly as it was.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .align import invert_matrix

# Face mask geometry on the unit square (matches align.FACE_TEMPLATE): an ellipse from the forehead
# to below the chin and across the cheeks, with soft edges.
MASK_CENTER = (0.5, 0.54)
MASK_AXES = (0.34, 0.40)
MASK_FEATHER = 0.045  # Gaussian sigma as a fraction of the crop size


class CompositeError(ValueError):
    """Bad input to compositing (shapes, dtypes, blend strength)."""


@dataclass(frozen=True)
class Blending:
    """How a restored face is pasted: `strength` 0 keeps the frame, 1 uses the restored face fully;
    `color_match` matches the restored crop's colour to the original crop's first."""

    strength: float = 1.0
    color_match: bool = True

    def __post_init__(self):
        if not 0.0 <= float(self.strength) <= 1.0:
            raise CompositeError(f"blend strength must be within 0..1, got {self.strength}")


@functools.lru_cache(maxsize=8)
def _face_mask_cached(crop_size: int) -> np.ndarray:
    size = int(crop_size)
    sigma = MASK_FEATHER * size
    # The hard ellipse is shrunk by two sigmas so the feathered edge fades out inside the crop.
    axes = (
        max(1, int(round((MASK_AXES[0] * size) - 2 * sigma))),
        max(1, int(round((MASK_AXES[1] * size) - 2 * sigma))),
    )
    center = (int(round(MASK_CENTER[0] * size)), int(round(MASK_CENTER[1] * size)))
    hard = np.zeros((size, size), np.float32)
    cv2.ellipse(hard, center, axes, 0, 0, 360, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    radius = max(1, int(np.ceil(3 * sigma)))
    mask = cv2.GaussianBlur(hard, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    # Snap the far tail of the Gaussian to exact zero: those pixels must stay untouched.
    mask[mask < 1.0 / 512.0] = 0.0
    # The crop border is outside the face by construction; keep it exactly zero at any crop size so
    # the pasted area never shows the crop's square outline.
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0.0
    mask = np.clip(mask, 0.0, 1.0)
    mask.setflags(write=False)
    return mask


def face_mask(crop_size: int) -> np.ndarray:
    """Feathered face mask in crop space, float32 (S, S) in 0..1, zero along the crop border."""
    if int(crop_size) < 8:
        raise CompositeError(f"crop size must be at least 8 pixels, got {crop_size}")
    return _face_mask_cached(int(crop_size))


# RGB -> YCrCb (BT.601 full range, as OpenCV defines it). Being linear, a per-channel gain and offset
# in YCrCb is one 3x4 affine map in RGB, applied in a single cv2.transform pass.
_RGB_TO_YCRCB = np.array(
    [[0.299, 0.587, 0.114], [0.5, -0.418688, -0.081312], [-0.168736, -0.331264, 0.5]], np.float64
)
_RGB_TO_YCRCB_F32 = _RGB_TO_YCRCB.astype(np.float32)  # for the statistics, taken in float32
_YCRCB_TO_RGB = np.linalg.inv(_RGB_TO_YCRCB)


def _ycrcb_mean_std(image, inside) -> tuple[np.ndarray, np.ndarray]:
    ycrcb = cv2.transform(image[::2, ::2].astype(np.float32), _RGB_TO_YCRCB_F32)
    mean, std = cv2.meanStdDev(ycrcb, mask=inside)
    return mean.ravel(), std.ravel()


def color_transfer_matrix(restored, original, mask, *, min_gain: float = 0.5, max_gain: float = 2.0) -> np.ndarray:
    """3x4 RGB affine map giving restored the per-channel YCrCb mean and spread of original in the mask.

    Statistics use every other pixel (plenty for a mean and a spread). The gain on the spread is
    clamped so a flat crop cannot blow the colours up.
    """
    inside = (np.asarray(mask)[::2, ::2] > 0.5).astype(np.uint8)
    if cv2.countNonZero(inside) < 16:
        return np.hstack([np.eye(3), np.zeros((3, 1))])
    source_mean, source_std = _ycrcb_mean_std(restored, inside)
    target_mean, target_std = _ycrcb_mean_std(original, inside)
    gain = np.clip(target_std / np.maximum(source_std, 1e-3), min_gain, max_gain)
    # x' = T^-1 (G (T x - mu_s) + mu_t); the YCrCb offsets cancel out.
    linear = _YCRCB_TO_RGB @ np.diag(gain) @ _RGB_TO_YCRCB
    offset = _YCRCB_TO_RGB @ (target_mean - gain * source_mean)
    return np.hstack([linear, offset[:, None]])


def match_color(restored, original, mask, *, min_gain: float = 0.5, max_gain: float = 2.0) -> np.ndarray:
    """restored (S, S, 3) uint8 RGB with its colour statistics matched to original inside the mask."""
    matrix = color_transfer_matrix(restored, original, mask, min_gain=min_gain, max_gain=max_gain)
    return cv2.transform(restored, matrix)


@functools.lru_cache(maxsize=8)
def _mask_support_corners(crop_size: int) -> np.ndarray:
    ys, xs = np.nonzero(face_mask(crop_size))
    x0, x1, y0, y1 = xs.min() - 1, xs.max() + 1, ys.min() - 1, ys.max() + 1
    return np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)


def mask_region(matrix, crop_size: int, frame_shape) -> Optional[tuple]:
    """Frame-space (x0, y0, x1, y1) bounding the warped mask support, clipped; None if off-frame."""
    inverse = invert_matrix(matrix)
    frame_points = _mask_support_corners(int(crop_size)) @ inverse[:, :2].T + inverse[:, 2]
    height, width = frame_shape[:2]
    x0 = max(0, int(np.floor(frame_points[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(frame_points[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(frame_points[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(frame_points[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def paste_back(
    frame,
    restored_crop,
    matrix,
    *,
    original_crop=None,
    blending: Blending = Blending(),
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Composite a restored (S, S, 3) uint8 crop into an RGB uint8 frame.

    matrix: the 2x3 frame->crop alignment matrix the crop was made with. original_crop: the crop
    before restoration, needed for colour matching. Returns a new frame (or writes into out, which may
    be frame itself).
    """
    frame = np.asarray(frame)
    restored_crop = np.asarray(restored_crop)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise CompositeError(f"expected an RGB uint8 frame, got {frame.dtype} {frame.shape}")
    size = restored_crop.shape[0]
    if restored_crop.dtype != np.uint8 or restored_crop.shape != (size, size, 3):
        raise CompositeError(f"expected a square RGB uint8 crop, got {restored_crop.dtype} {restored_crop.shape}")
    blend = blending.strength
    result = frame.copy() if out is None else out
    if out is not None and out is not frame:
        np.copyto(result, frame)
    if blend == 0.0:
        return result
    mask = face_mask(size)
    if blending.color_match and original_crop is not None:
        restored_crop = match_color(restored_crop, np.asarray(original_crop), mask)
    region = mask_region(matrix, size, frame.shape)
    if region is None:
        return result
    x0, y0, x1, y1 = region
    # Crop -> frame transform, shifted so the warp writes only the face region.
    inverse = invert_matrix(matrix)
    inverse[:, 2] -= (x0, y0)
    region_size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(restored_crop, inverse, region_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, inverse, region_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if blend != 1.0:
        alpha *= float(blend)
    # Where alpha is 0 the sum is background * 1 + warped * 0, i.e. the original pixel, bit for bit.
    background = np.ascontiguousarray(frame[y0:y1, x0:x1])
    result[y0:y1, x0:x1] = cv2.blendLinear(background, warped, 1.0 - alpha, alpha)
    return result


def paste_many(frame, faces, *, blend: float = 1.0, color_match: bool = True,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """Several restored faces of one frame pasted together: faces is a list of (restored_crop, matrix,
    original_crop, strength). Where masks overlap, the faces are mixed by their mask weights (normalised where
    they sum past 1) instead of one paste covering the other's edge: the result does not depend on their order
    and shows no seam. Pixels no mask touches stay exactly as they were. Returns a new frame, or writes into out,
    which may be frame itself."""
    frame = np.asarray(frame)
    if len(faces) == 1:
        crop, matrix, original, strength = faces[0]
        return paste_back(frame, crop, matrix, original_crop=original, blending=Blending(blend * strength, color_match),
                          out=out)
    layers = []
    for crop, matrix, original, strength in faces:
        size = crop.shape[0]
        mask = face_mask(size)
        if color_match and original is not None:
            crop = match_color(crop, np.asarray(original), mask)
        region = mask_region(matrix, size, frame.shape)
        if region is None or blend * strength <= 0.0:
            continue
        layers.append((crop, matrix, region, mask, blend * strength))
    result = frame.copy() if out is None else out
    if out is not None and out is not frame:
        np.copyto(result, frame)
    if not layers:
        return result
    x0, y0 = min(r[2][0] for r in layers), min(r[2][1] for r in layers)
    x1, y1 = max(r[2][2] for r in layers), max(r[2][3] for r in layers)
    size = (x1 - x0, y1 - y0)
    colour = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    weight = np.zeros((y1 - y0, x1 - x0), np.float32)
    for crop, matrix, _, mask, strength in layers:
        inverse = invert_matrix(matrix)
        inverse[:, 2] -= (x0, y0)
        warped = cv2.warpAffine(crop, inverse, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, inverse, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0.0) * strength
        colour += warped.astype(np.float32) * alpha[:, :, None]
        weight += alpha
    background = frame[y0:y1, x0:x1].astype(np.float32)
    scale = 1.0 / np.maximum(weight, 1.0)
    mixed = background * (1.0 - weight * scale)[:, :, None] + colour * scale[:, :, None]
    touched = weight > 0
    result[y0:y1, x0:x1][touched] = np.clip(np.rint(mixed[touched]), 0, 255).astype(np.uint8)
    return result


class Compositor:
    """paste_back with fixed options, for the frame pipeline."""

    def __init__(self, blend: float = 1.0, color_match: bool = True):
        Blending(blend, color_match)  # checks the strength
        self.blend = float(blend)
        self.color_match = bool(color_match)

    def many(self, frame, faces, out=None) -> np.ndarray:
        """paste_many: faces are (restored_crop, matrix, original_crop, strength)."""
        return paste_many(frame, faces, blend=self.blend, color_match=self.color_match, out=out)

    def __call__(self, frame, restored_crop, matrix, original_crop=None, out=None, strength: float = 1.0) -> np.ndarray:
        """strength (0..1) scales the blend: a face held over a missed detection fades out."""
        return paste_back(
            frame,
            restored_crop,
            matrix,
            original_crop=original_crop,
            blending=Blending(self.blend * float(strength), self.color_match),
            out=out,
        )
