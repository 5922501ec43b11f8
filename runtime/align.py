"""Alignment of a face to the model's crop: a similarity transform from the six keypoints to a template.

The template puts the face where FFHQ-aligned crops have it (the data the restorer was trained on):
eyes at about 47% of the height, a quarter of the width apart, the mouth at about 72%, the ear
points about 53% of the width apart. It is defined on the unit square and scaled to any crop size S.
find_faces searches a still photo (an enrollment selfie) for its faces and aligns them the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import cv2
import numpy as np

from .tracking import Detector, FaceDetection, box_iou, make_detector, refine_near

# Unit-square template, same order as tracking.KEYPOINT_NAMES (right eye is the person's right,
# i.e. image left). Relative positions measured from BlazeFace output on frontal faces.
FACE_TEMPLATE = np.array(
    [
        [0.375, 0.470],  # right eye
        [0.625, 0.470],  # left eye
        [0.500, 0.585],  # nose tip
        [0.500, 0.715],  # mouth centre
        [0.235, 0.540],  # right ear tragion
        [0.765, 0.540],  # left ear tragion
    ],
    np.float64,
)

# Least-squares weights: eyes and mouth fix scale and roll; the nose and ears move with head turns
# and BlazeFace places the ears loosely, so they count less.
TEMPLATE_WEIGHTS = np.array([1.0, 1.0, 0.5, 1.0, 0.25, 0.25])

# BlazeFace finds "faces" in noise and texture with scores up to about 0.7 (a 512x512 noise image scores 0.69): a
# face of a photo must score at least this, in the whole photo and in its windows alike (find_faces).
PHOTO_MIN_SCORE = 0.75


class AlignmentError(ValueError):
    """Bad input to alignment (wrong image type, degenerate keypoints)."""


@dataclasses.dataclass
class AlignedFace:
    """A face warped into crop space.

    crop: (S, S, 3) uint8 RGB. matrix: 2x3 float64 mapping frame pixels to crop pixels.
    box: (x0, y0, x1, y1) in the frame. keypoints: (6, 2) frame pixels.
    """

    crop: np.ndarray
    matrix: np.ndarray
    box: tuple
    score: float
    keypoints: np.ndarray

    @property
    def face_size(self) -> float:
        """Face size in frame pixels (larger box side); small values mean a tiny, low-detail face."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def template_points(crop_size: int) -> np.ndarray:
    """The template scaled to an S x S crop, in pixel coordinates (pixel centres at integers)."""
    if int(crop_size) < 8:
        raise AlignmentError(f"crop size must be at least 8 pixels, got {crop_size}")
    return FACE_TEMPLATE * crop_size - 0.5


def similarity_transform(source, target, weights=None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) mapping source to target.

    Closed form (Umeyama 1991, restricted to 2-D and no reflection). Returns a 2x3 float64 matrix.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise AlignmentError(f"need matching (N>=2, 2) point sets, got {source.shape} and {target.shape}")
    w = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    source_mean = w @ source
    target_mean = w @ target
    src = source - source_mean
    dst = target - target_mean
    variance = float(w @ (src**2).sum(axis=1))
    if variance < 1e-9:
        raise AlignmentError("keypoints are degenerate (all at one point)")
    # With complex numbers z -> a*z + t is a similarity; a = sum w conj(src) dst / sum w |src|^2.
    src_c = src[:, 0] + 1j * src[:, 1]
    dst_c = dst[:, 0] + 1j * dst[:, 1]
    a = complex(np.sum(w * np.conj(src_c) * dst_c)) / variance
    rotation_scale = np.array([[a.real, -a.imag], [a.imag, a.real]])
    translation = target_mean - rotation_scale @ source_mean
    return np.hstack([rotation_scale, translation[:, None]])


def alignment_matrix(keypoints, crop_size: int) -> np.ndarray:
    """2x3 matrix mapping frame pixels to crop pixels for the six keypoints."""
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints.shape != (6, 2):
        raise AlignmentError(f"expected (6, 2) keypoints, got {keypoints.shape}")
    return similarity_transform(keypoints, template_points(crop_size), TEMPLATE_WEIGHTS)


def invert_matrix(matrix) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def warp_to_crop(frame, matrix, crop_size: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Sample the S x S crop from the frame. Outside the frame, edge pixels are mirrored.

    out: a C-contiguous (S, S, 3) uint8 array to sample into (a slot of the pipeline's batch buffer) instead
    of a new one."""
    return cv2.warpAffine(
        frame,
        np.asarray(matrix, np.float64),
        (int(crop_size), int(crop_size)),
        dst=out,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise AlignmentError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def align_face(image, face: FaceDetection, crop_size: int) -> AlignedFace:
    image = _check_image(image)
    matrix = alignment_matrix(face.keypoints, crop_size)
    return AlignedFace(
        crop=warp_to_crop(image, matrix, crop_size),
        matrix=matrix,
        box=face.box,
        score=face.score,
        keypoints=np.asarray(face.keypoints, np.float32),
    )


def face_crops(image_rgb_uint8, crop_size: int, detector: Optional[Detector] = None) -> list:
    """Detect and align every face the detector sees in a still image, largest face first (one look at the whole
    image; find_faces is the search for the faces of a photo).

    Callers decide what "no face", "several faces" or "tiny face" (AlignedFace.face_size) means.
    """
    image = _check_image(image_rgb_uint8)
    template_points(crop_size)  # validates crop_size before any detector work
    own_detector = detector is None
    if own_detector:
        detector = make_detector("image", timeout_s=60.0)
    try:
        faces = detector.detect(image, None)
        # A second look around each face gives steadier keypoints for faces small in the photo.
        faces = [refine_near(detector, image, face) for face in faces]
    finally:
        if own_detector:
            detector.close()
    faces = sorted(faces, key=lambda face: face.area, reverse=True)
    return [align_face(image, face, crop_size) for face in faces]


def _window_starts(length: int, side: int) -> list:
    if side >= length:
        return [0]
    stride = max(1, side // 2)
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def find_faces(image_rgb_uint8, crop_size: int, detector: Optional[Detector] = None) -> list:
    """Every face of a still photo, aligned like the live crop, largest first: the one search for enrollment
    selfies (enroll, the panel's photo check, bench). detector: in image mode (default: the vendored model).

    The whole photo is searched first. BlazeFace looks at its input at 128x128, so a face that is
    small in a large photo can be missed; only then is the photo searched again in overlapping
    square windows (half and a quarter of its short side), so a good selfie is never refused for
    a false detection in a window. Faces scoring under PHOTO_MIN_SCORE are not faces.
    """
    image = _check_image(image_rgb_uint8)
    own = make_detector("image", timeout_s=60.0) if detector is None else contextlib.nullcontext(detector)
    with own as detector:
        return _search_photo(image, crop_size, detector)


def _search_photo(image, crop_size: int, detector: Detector) -> list:
    faces = [face for face in face_crops(image, crop_size, detector=detector) if face.score >= PHOTO_MIN_SCORE]
    if faces:
        return faces
    height, width = image.shape[:2]
    found = []
    for fraction in (2, 4):
        side = min(height, width) // fraction
        if side < 128:
            break
        for top in _window_starts(height, side):
            for left in _window_starts(width, side):
                window = np.ascontiguousarray(image[top: top + side, left: left + side])
                for face in detector.detect(window, None):
                    if face.score < PHOTO_MIN_SCORE:
                        continue
                    face.shift(left, top)
                    same = [other for other in found if box_iou(other.box, face.box) > 0.3]
                    if not same:
                        found.append(face)
                    elif face.score > max(other.score for other in same):
                        replaced = {id(other) for other in same}
                        found = [other for other in found if id(other) not in replaced] + [face]
    found = sorted((refine_near(detector, image, face) for face in found), key=lambda face: face.area, reverse=True)
    return [align_face(image, face, crop_size) for face in found]
