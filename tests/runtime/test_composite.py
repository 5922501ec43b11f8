"""Pasting restored crops back: feathered mask, colour matching, blend strength, untouched background."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime import align, composite
from instantrestore.runtime.composite import Blending, CompositeError, face_mask, match_color, paste_back
from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, astronaut, placed_face


pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def aligned():
    """The astronaut in a 640x480 frame with its aligned 128 crop (one MediaPipe call)."""
    frame, _ = placed_face((640, 480), 1.0, (64.0, -16.0))
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        faces = align.face_crops(frame, 128, detector=detector)
    assert len(faces) == 1
    return frame, faces[0]


def warped_mask(face, frame_shape):
    inverse = align.invert_matrix(face.matrix)
    size = face.crop.shape[0]
    return cv2.warpAffine(
        face_mask(size), inverse, (frame_shape[1], frame_shape[0]), flags=cv2.INTER_LINEAR, borderValue=0.0
    )


@pytest.mark.parametrize("crop_size", [16, 64, 128, 512])
def test_mask_is_feathered_and_zero_at_the_crop_border(crop_size):
    mask = face_mask(crop_size)
    assert mask.shape == (crop_size, crop_size) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() <= 1.0
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert np.all(border == 0.0)
    centre = mask[crop_size // 2 - 1 : crop_size // 2 + 1, crop_size // 2 - 1 : crop_size // 2 + 1]
    assert centre.min() > 0.95
    if crop_size >= 64:
        # Soft edge: a band of partial weights several pixels wide, not a hard cut.
        middle_row = mask[int(0.56 * crop_size)]
        partial = np.count_nonzero((middle_row > 0.02) & (middle_row < 0.98))
        assert partial >= 2 * 0.03 * crop_size
        # It covers the face: the template's eyes and mouth are fully inside.
        for x, y in align.template_points(crop_size)[[0, 1, 3]]:
            assert mask[int(round(y)), int(round(x))] > 0.9


def test_pixels_outside_the_mask_are_bit_exact(aligned):
    frame, face = aligned
    original = frame.copy()
    out = paste_back(frame, 255 - face.crop, face.matrix, original_crop=face.crop, blending=Blending(color_match=False))
    np.testing.assert_array_equal(frame, original)  # input untouched
    inside = warped_mask(face, frame.shape) > 0
    changed = np.any(out != frame, axis=2)
    assert np.count_nonzero(changed & ~inside) == 0
    np.testing.assert_array_equal(out[~inside], frame[~inside])
    # The face itself did change, strongly.
    core = warped_mask(face, frame.shape) > 0.99
    assert np.abs(out[core].astype(int) - frame[core].astype(int)).mean() > 60
    # The changed area is the face, not half the frame.
    assert 0.02 < changed.mean() < 0.25


def test_pixels_outside_the_mask_stay_exact_with_colour_matching_and_blend(aligned):
    frame, face = aligned
    inside = warped_mask(face, frame.shape) > 0
    for blend in (1.0, 0.6):
        out = paste_back(frame, 255 - face.crop, face.matrix, original_crop=face.crop, blending=Blending(blend))
        np.testing.assert_array_equal(out[~inside], frame[~inside])


def test_blend_strength(aligned):
    frame, face = aligned
    restored = np.full_like(face.crop, 250)
    zero = paste_back(frame, restored, face.matrix, blending=Blending(0.0, False))
    np.testing.assert_array_equal(zero, frame)
    full = paste_back(frame, restored, face.matrix, blending=Blending(1.0, False)).astype(float)
    half = paste_back(frame, restored, face.matrix, blending=Blending(0.5, False)).astype(float)
    core = warped_mask(face, frame.shape) > 0.99
    full_change = (full - frame)[core].mean()
    half_change = (half - frame)[core].mean()
    assert half_change == pytest.approx(full_change / 2, rel=0.05)
    with pytest.raises(CompositeError):
        paste_back(frame, restored, face.matrix, blending=Blending(1.5))


def test_pasting_the_unrestored_crop_changes_almost_nothing(aligned):
    frame, face = aligned
    out = paste_back(frame, face.crop, face.matrix, original_crop=face.crop)
    difference = np.abs(out.astype(int) - frame.astype(int))
    inside = warped_mask(face, frame.shape) > 0
    # Only resampling blur from the two warps (the crop is magnified, so a little), no shift.
    assert difference[inside].mean() < 6.0
    assert difference[~inside].max() == 0


def test_colour_matching_moves_mean_and_spread_to_the_original(aligned):
    _, face = aligned
    mask = face_mask(face.crop.shape[0])
    cast = np.clip(face.crop.astype(float) * 0.6 + np.array([70.0, 20.0, -10.0]), 0, 255).astype(np.uint8)
    matched = match_color(cast, face.crop, mask)
    assert matched.dtype == np.uint8 and matched.shape == face.crop.shape
    inside = mask > 0.5

    def ycrcb_stats(image):
        values = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[inside].astype(float)
        return values.mean(axis=0), values.std(axis=0)

    original_mean, original_std = ycrcb_stats(face.crop)
    cast_mean, _ = ycrcb_stats(cast)
    matched_mean, matched_std = ycrcb_stats(matched)
    assert np.abs(cast_mean - original_mean).max() > 15  # the cast was real
    np.testing.assert_allclose(matched_mean, original_mean, atol=2.0)
    np.testing.assert_allclose(matched_std, original_std, rtol=0.1, atol=1.0)
    # And the matched crop is close to the original pixel by pixel (the cast was affine).
    assert np.abs(matched[inside].astype(int) - face.crop[inside].astype(int)).mean() < 6.0


def test_colour_matching_clamps_the_gain_on_flat_crops(aligned):
    _, face = aligned
    mask = face_mask(face.crop.shape[0])
    flat = np.full_like(face.crop, 128)
    matched = match_color(face.crop, flat, mask)
    # Spread can shrink at most by half, never collapse or explode.
    inside = mask > 0.5
    assert matched[inside].astype(float).std() > 0.3 * face.crop[inside].astype(float).std()


def test_face_partly_outside_the_frame(aligned):
    _, face = aligned
    frame = astronaut()[:, 180:]  # the face is cut by the left edge
    keypoints = face.keypoints - np.array([64.0, -16.0], np.float32) - np.array([180.0, 0.0], np.float32)
    matrix = align.alignment_matrix(keypoints, 128)
    crop = align.warp_to_crop(frame, matrix, 128)
    out = paste_back(frame, 255 - crop, matrix, original_crop=crop)
    assert out.shape == frame.shape
    inside = warped_mask(align.AlignedFace(crop, matrix, (0, 0, 1, 1), 1.0, keypoints), frame.shape) > 0
    np.testing.assert_array_equal(out[~inside], frame[~inside])
    assert np.any(out != frame)


def test_in_place_output(aligned):
    frame, face = aligned
    target = frame.copy()
    expected = paste_back(frame, 255 - face.crop, face.matrix, original_crop=face.crop)
    returned = paste_back(target, 255 - face.crop, face.matrix, original_crop=face.crop, out=target)
    assert returned is target
    np.testing.assert_array_equal(target, expected)


def test_region_is_bounded_by_the_face_at_1080p(aligned):
    _, face = aligned
    frame = cv2.resize(astronaut(), (1920, 1080))
    keypoints = face.keypoints - np.array([64.0, -16.0], np.float32)
    keypoints = keypoints * np.array([1920 / 512, 1080 / 512], np.float32)
    matrix = align.alignment_matrix(keypoints, 512)
    x0, y0, x1, y1 = composite.mask_region(matrix, 512, frame.shape)
    # Work is confined to the face's neighbourhood, a small part of the 1080p frame.
    assert (x1 - x0) * (y1 - y0) < 0.15 * 1920 * 1080


def test_bad_inputs_raise_composite_errors(aligned):
    frame, face = aligned
    with pytest.raises(CompositeError):
        paste_back(frame.astype(np.float32), face.crop, face.matrix)
    with pytest.raises(CompositeError):
        paste_back(frame, face.crop[:, :100], face.matrix)
    with pytest.raises(CompositeError):
        face_mask(4)
