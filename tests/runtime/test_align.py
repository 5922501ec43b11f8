"""Alignment: keypoints onto the crop template, the similarity transform, face crops and faces in large photos."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime import align

from tests.support.media_helpers import apply_affine, astronaut, no_face_image, placed_face


# ---------------------------------------------------------------- alignment and enrollment crops


@pytest.mark.timeout(120)
@pytest.mark.parametrize("crop_size", [64, 128, 512])
def test_alignment_puts_keypoints_on_the_template(astronaut_face, crop_size):
    matrix = align.alignment_matrix(astronaut_face.keypoints, crop_size)
    in_crop = apply_affine(matrix, astronaut_face.keypoints)
    template = align.template_points(crop_size)
    # Eyes and mouth land within 3% of the crop of their template spots; ears more loosely.
    assert np.abs(in_crop[[0, 1, 3]] - template[[0, 1, 3]]).max() < 0.03 * crop_size
    assert np.abs(in_crop - template).max() < 0.06 * crop_size
    # FFHQ-like framing: eyes a bit above the middle, mouth at about 72%, ear span about 55%.
    eyes_y = in_crop[:2, 1].mean() / crop_size
    assert 0.43 < eyes_y < 0.50
    assert 0.68 < in_crop[3, 1] / crop_size < 0.75
    assert 0.48 < (in_crop[5, 0] - in_crop[4, 0]) / crop_size < 0.62


@pytest.mark.timeout(120)
def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 100, (6, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + shift
    matrix = align.similarity_transform(points, moved)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    with pytest.raises(align.AlignmentError):
        align.similarity_transform(np.zeros((6, 2)), moved)


@pytest.mark.timeout(120)
def test_face_crops_for_enrollment(image_detector):
    image = astronaut()
    crops = align.face_crops(image, 128, detector=image_detector)
    assert len(crops) == 1
    face = crops[0]
    assert face.crop.shape == (128, 128, 3) and face.crop.dtype == np.uint8
    assert face.matrix.shape == (2, 3) and face.keypoints.shape == (6, 2)
    assert face.score > 0.8 and 60 < face.face_size < 160
    # The crop is the face: its centre is skin-coloured, red above green above blue.
    centre = face.crop[54:74, 54:74].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2]

    # Two people side by side: two crops, largest first.
    head = image[30:270, 110:350]  # 240x240 around the face
    pair = np.concatenate([head, cv2_resize(head, 0.7, like=head)], axis=1)
    pair_crops = align.face_crops(pair, 96, detector=image_detector)
    assert len(pair_crops) == 2
    assert pair_crops[0].face_size > pair_crops[1].face_size

    # No face at all.
    assert align.face_crops(no_face_image(), 96, detector=image_detector) == []

    # A tiny face is still found, and reports its small size so enrollment can refuse it.
    tiny, _ = placed_face((320, 240), 0.4, (40.0, 20.0))
    tiny_crops = align.face_crops(tiny, 96, detector=image_detector)
    assert len(tiny_crops) == 1 and 25 < tiny_crops[0].face_size < 50
    # Far smaller than the short-range model's reach: reported as no face.
    far, _ = placed_face((640, 480), 0.25, (200.0, 150.0))
    assert align.face_crops(far, 96, detector=image_detector) == []

    with pytest.raises(align.AlignmentError):
        align.face_crops(image.astype(np.float32), 96, detector=image_detector)


@pytest.mark.timeout(120)
def test_face_crops_without_a_detector_uses_the_vendored_model():
    crops = align.face_crops(astronaut(), 64)
    assert len(crops) == 1 and crops[0].crop.shape == (64, 64, 3)


def cv2_resize(image, factor, like):
    """Shrink image by factor and pad it to like's size with grey."""
    import cv2

    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    canvas = np.full_like(like, 120)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("canvas, scale", [((2000, 1500), 1.0), ((1200, 900), 0.8)])
def test_a_face_small_in_a_large_photo_is_found(canvas, scale):
    from instantrestore.runtime.tracking import FaceDetector

    photo, _ = placed_face(canvas, scale, (0.3 * canvas[0], 0.2 * canvas[1]))
    with FaceDetector(mode="image", timeout_s=60.0) as detector:
        faces = align.find_faces(photo, 128, detector)
        assert len(faces) == 1 and faces[0].face_size == pytest.approx(102 * scale, rel=0.15)
        assert align.find_faces(np.ascontiguousarray(cv2.resize(no_face_image(), canvas)), 128, detector) == []
