"""Face detection: the vendored BlazeFace through MediaPipe, make_detector, the detectors' errors."""

import threading

import numpy as np
import pytest

from instantrestore.runtime import tracking
from instantrestore.runtime.files import sha256_file
from instantrestore.runtime.tracking import (
    Detector,
    DetectorAssetError,
    DetectorTimeout,
    FaceDetector,
    NearAndFarDetector,
    make_detector,
)

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, apply_affine, astronaut, no_face_image
from tests.support.tracking_helpers import video_detector, moving_clip


pytestmark = pytest.mark.timeout(120)


def test_every_detector_is_a_detector_and_the_factory_makes_each():
    with make_detector("image", timeout_s=MEDIAPIPE_TIMEOUT_S) as near:
        assert isinstance(near, FaceDetector) and isinstance(near, Detector) and near.mode == "image"
    with make_detector("video", far=True, timeout_s=MEDIAPIPE_TIMEOUT_S) as both:
        assert isinstance(both, NearAndFarDetector) and isinstance(both, Detector)
        assert both.near.mode == both.far.mode == "video"
    with pytest.raises(tracking.TrackingError, match="mode must be"):
        make_detector("photo")


def test_vendored_model_matches_notice_hash():
    notice = (tracking.ASSET_DIR / "NOTICE-mediapipe").read_text()
    assert tracking.BLAZEFACE_SHORT_RANGE_SHA256 in notice
    assert "Apache License" in notice and "mediapipe==0.10.21" in notice
    assert sha256_file(tracking.BLAZEFACE_SHORT_RANGE) == tracking.BLAZEFACE_SHORT_RANGE_SHA256
    assert tracking.BLAZEFACE_FULL_RANGE_SHA256 in notice
    assert sha256_file(tracking.BLAZEFACE_FULL_RANGE) == tracking.BLAZEFACE_FULL_RANGE_SHA256


def test_corrupted_model_is_refused_with_clear_error(tmp_path, monkeypatch):
    broken = tmp_path / "face_detection_short_range.tflite"
    data = bytearray(tracking.BLAZEFACE_SHORT_RANGE.read_bytes())
    data[1000] ^= 0xFF
    broken.write_bytes(bytes(data))
    monkeypatch.setattr(tracking.detectors, "BLAZEFACE_SHORT_RANGE", broken)
    with pytest.raises(DetectorAssetError, match="corrupted"):
        FaceDetector(timeout_s=MEDIAPIPE_TIMEOUT_S)
    monkeypatch.setattr(tracking.detectors, "BLAZEFACE_SHORT_RANGE", tmp_path / "missing.tflite")
    with pytest.raises(DetectorAssetError, match="not found"):
        FaceDetector(timeout_s=MEDIAPIPE_TIMEOUT_S)


def test_garbage_model_file_raises_instead_of_hanging(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a tflite model" * 100)
    with pytest.raises(DetectorAssetError):
        FaceDetector(model_path=garbage, timeout_s=MEDIAPIPE_TIMEOUT_S)


def test_detector_timeout_fires_on_a_hung_call():
    detector = FaceDetector(mode="image", timeout_s=0.2)
    try:
        release = threading.Event()
        # Stand-in for a MediaPipe graph that never returns.
        with pytest.raises(DetectorTimeout):
            detector._call(release.wait, 5.0)
        release.set()
    finally:
        detector.close()


def test_detects_astronaut_face_with_plausible_keypoints(astronaut_face):
    face = astronaut_face
    k = face.keypoints
    assert k.shape == (6, 2) and k.dtype == np.float32
    assert face.score > 0.8
    x0, y0, x1, y1 = face.box
    assert 60 < x1 - x0 < 160 and 60 < y1 - y0 < 160
    # The face is in the upper left quarter of the portrait.
    assert 150 < face.center[0] < 300 and 60 < face.center[1] < 200
    right_eye, left_eye, nose, mouth, right_ear, left_ear = k
    assert right_eye[0] < nose[0] < left_eye[0]  # person's right eye is on the image left
    assert right_ear[0] < right_eye[0] and left_ear[0] > left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert 30 < np.linalg.norm(left_eye - right_eye) < 60


def test_no_face_in_face_free_images(image_detector):
    assert image_detector.detect(no_face_image()) == []
    assert image_detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_bad_frames_are_rejected(image_detector):
    with pytest.raises(tracking.TrackingError):
        image_detector.detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(tracking.TrackingError):
        image_detector.detect(np.zeros((100, 100, 3), np.float32))


def test_detection_follows_translation_and_scale_over_a_clip(astronaut_face):
    detector = video_detector()
    try:
        centre_errors, size_ratios = [], []
        for index, (frame, matrix) in enumerate(moving_clip()):
            faces = detector.detect(frame, index / 25.0)
            assert len(faces) == 1, f"frame {index}: {len(faces)} faces"
            expected = apply_affine(matrix, astronaut_face.keypoints)
            found = faces[0].keypoints
            face_size = 95.0 * matrix[0, 0]
            centre_errors.append(np.linalg.norm(found[:4].mean(axis=0) - expected[:4].mean(axis=0)) / face_size)
            size_ratios.append(np.linalg.norm(found[1] - found[0]) / np.linalg.norm(expected[1] - expected[0]))
        # The face moves 140 px and grows 55%: the keypoints follow within a few % of the face size.
        assert max(centre_errors) < 0.08, centre_errors
        assert 0.7 < min(size_ratios) and max(size_ratios) < 1.15, size_ratios
    finally:
        detector.close()


def test_video_mode_accepts_repeated_timestamps():
    detector = video_detector()
    try:
        frame = astronaut()
        for _ in range(3):
            assert len(detector.detect(frame, 1.0)) == 1
        assert len(detector.detect(frame, None)) == 1
    finally:
        detector.close()
