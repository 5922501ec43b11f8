"""Face detection (vendored BlazeFace through MediaPipe), One Euro smoothing and tracking."""

import threading

import numpy as np
import pytest

from instantrestore.runtime import align, tracking
from instantrestore.runtime.files import sha256_file
from instantrestore.runtime.tracking import (
    Detector,
    DetectorAssetError,
    DetectorTimeout,
    FaceDetection,
    FaceDetector,
    NearAndFarDetector,
    OneEuroFilter,
    Tracker,
    make_detector,
)

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, apply_affine, astronaut, no_face_image, placed_face


pytestmark = pytest.mark.timeout(120)


def test_every_detector_is_a_detector_and_the_factory_makes_each():
    with make_detector("image", timeout_s=MEDIAPIPE_TIMEOUT_S) as near:
        assert isinstance(near, FaceDetector) and isinstance(near, Detector) and near.mode == "image"
    with make_detector("video", far=True, timeout_s=MEDIAPIPE_TIMEOUT_S) as both:
        assert isinstance(both, NearAndFarDetector) and isinstance(both, Detector)
        assert both.near.mode == both.far.mode == "video"
    with pytest.raises(tracking.TrackingError, match="mode must be"):
        make_detector("photo")


def video_detector():
    return FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S)


# ---------------------------------------------------------------- vendored model


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


# ---------------------------------------------------------------- detection on stills


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


def moving_clip(frames=24):
    """The astronaut drifting right and up while coming closer: (frame, astronaut->frame matrix)."""
    for index in range(frames):
        scale = 0.8 + 0.02 * index
        offset = (40.0 + 6.0 * index, 10.0 - 2.0 * index)
        yield placed_face((640, 480), scale, offset)


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


def test_tracker_follows_the_moving_face_and_refines_near_it(astronaut_face):
    tracker = Tracker(video_detector())
    try:
        lags, eye_distances = [], []
        first_offset = None
        for index, (frame, matrix) in enumerate(moving_clip(36)):
            track = tracker.update(frame, index / 25.0)
            assert track is not None and track.missed == 0
            expected = apply_affine(matrix, astronaut_face.keypoints)
            offset = track.raw_keypoints[:4].mean(axis=0) - expected[:4].mean(axis=0)
            first_offset = offset if first_offset is None else first_offset
            lags.append(np.linalg.norm(track.keypoints[:4].mean(axis=0) - expected[:4].mean(axis=0)))
            eye_distances.append(np.linalg.norm(track.raw_keypoints[1] - track.raw_keypoints[0]) / matrix[0, 0])
        # Detection near the track gives a steady face size while the face moves and grows ...
        assert np.std(eye_distances) / np.mean(eye_distances) < 0.03, eye_distances
        # ... and the smoothed keypoints stay within 15% of a face size of the moving face.
        face_sizes = [95.0 * (0.8 + 0.02 * index) for index in range(36)]
        assert max(lag / size for lag, size in zip(lags, face_sizes)) < 0.15, lags
    finally:
        tracker.detector.close()


def test_video_mode_accepts_repeated_timestamps():
    detector = video_detector()
    try:
        frame = astronaut()
        for _ in range(3):
            assert len(detector.detect(frame, 1.0)) == 1
        assert len(detector.detect(frame, None)) == 1
    finally:
        detector.close()


# ---------------------------------------------------------------- One Euro filter


def test_one_euro_filter_constant_input_is_exact():
    filt = OneEuroFilter(min_cutoff=0.5, beta=1.0)
    value = np.array([[3.0, 4.0], [5.0, 6.0]])
    for index in range(20):
        out = filt(value, index / 30.0)
    np.testing.assert_array_equal(out, value)


def test_one_euro_filter_reduces_noise_and_follows_steps():
    rng = np.random.default_rng(1)
    filt = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    noisy = 10.0 + rng.normal(0.0, 1.0, 300)
    smoothed = np.array([filt(np.array([value]), index / 30.0)[0] for index, value in enumerate(noisy)])
    assert smoothed[100:].std() < 0.3 * noisy[100:].std()
    # A fast filter (large beta) follows a step in a few frames.
    fast = OneEuroFilter(min_cutoff=0.5, beta=5.0)
    outputs = [fast(np.array([0.0 if index < 10 else 100.0]), index / 30.0)[0] for index in range(40)]
    assert outputs[-1] == pytest.approx(100.0, abs=1.0)
    slow = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    slow_outputs = [slow(np.array([0.0 if index < 10 else 100.0]), index / 30.0)[0] for index in range(40)]
    assert outputs[15] > slow_outputs[15] + 10.0


def test_one_euro_filter_rejects_bad_parameters():
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)


# ---------------------------------------------------------------- tracking


def crop_points(matrix, reference):
    """Positions, in crop pixels, of three fixed frame points around the face."""
    return apply_affine(matrix, [reference, reference + [40.0, 0.0], reference + [0.0, 40.0]])


@pytest.mark.parametrize("noise_sigma", [0.0, 2.0])
def test_crop_jitter_on_a_still_face_is_below_a_pixel(noise_sigma):
    crop_size = 512  # the real model's crop: the face is magnified about 3x, the hardest case
    frame, _ = placed_face((640, 480), 1.0, (64.0, -16.0))
    rng = np.random.default_rng(0)
    tracker = Tracker(video_detector())
    try:
        smoothed, raw = [], []
        for index in range(60):
            noisy = frame
            if noise_sigma:
                noisy = np.clip(frame + rng.normal(0.0, noise_sigma, frame.shape), 0, 255).astype(np.uint8)
            track = tracker.update(noisy, index / 30.0)
            assert track is not None and track.missed == 0
            smoothed.append(align.alignment_matrix(track.keypoints, crop_size))
            raw.append(align.alignment_matrix(track.raw_keypoints, crop_size))
        reference = track.raw_keypoints.mean(axis=0)
        points = np.array([crop_points(m, reference) for m in smoothed])
        raw_points = np.array([crop_points(m, reference) for m in raw])
        frame_to_frame = np.linalg.norm(np.diff(points, axis=0), axis=2).max()
        settled = np.abs(points[30:] - points[30:].mean(axis=0)).max()
        assert frame_to_frame < 1.0, frame_to_frame
        assert settled < 1.0, settled
        if noise_sigma:
            raw_step = np.linalg.norm(np.diff(raw_points, axis=0), axis=2).max()
            assert raw_step > 2.0 * frame_to_frame, (raw_step, frame_to_frame)
        else:
            assert frame_to_frame < 0.5  # identical frames: only the settling after the first look
    finally:
        tracker.detector.close()


class ScriptedDetector:
    """Returns a scripted list of faces per call (None entries mean no face)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def detect(self, frame, timestamp_s=None):
        faces = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return [] if faces is None else list(faces)

    def close(self):
        pass


def fake_face(cx, cy, size=100.0, score=0.9):
    template = align.FACE_TEMPLATE - 0.5
    keypoints = (template * size + [cx, cy]).astype(np.float32)
    half = size / 2.0
    return FaceDetection(keypoints=keypoints, box=(cx - half, cy - half, cx + half, cy + half), score=score)


def test_track_survives_a_few_missed_detections():
    face = fake_face(320, 240)
    frame = np.zeros((480, 640, 3), np.uint8)
    script = [[face]] * 3 + [None] * 5 + [[face]] + [None] * 6
    tracker = Tracker(ScriptedDetector(script), max_missed=5, roi_scale=None)
    results = [tracker.update(frame, index / 30.0) for index in range(len(script))]
    assert all(result is not None for result in results[:9])
    assert [result.missed for result in results[3:8]] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(results[7].keypoints, results[2].keypoints)  # last track kept
    assert results[8].missed == 0
    assert all(result is not None for result in results[9:14])
    assert results[14] is None  # sixth miss in a row ends the track


def test_default_choice_is_the_largest_central_face():
    frame = np.zeros((480, 640, 3), np.uint8)
    small_centre = fake_face(320, 240, size=60)
    large_centre = fake_face(330, 250, size=140)
    large_corner = fake_face(80, 70, size=150)
    chosen = tracking.largest_central_face([small_centre, large_corner, large_centre], frame)
    assert chosen is large_centre
    tracker = Tracker(ScriptedDetector([[small_centre, large_corner, large_centre]]), roi_scale=None)
    track = tracker.update(frame, 0.0)
    np.testing.assert_allclose(track.raw_keypoints, large_centre.keypoints)


def test_track_sticks_to_its_face_when_another_appears():
    frame = np.zeros((480, 640, 3), np.uint8)
    first = fake_face(200, 240, size=100)
    bigger_newcomer = fake_face(450, 240, size=160)
    tracker = Tracker(ScriptedDetector([[first], [first, bigger_newcomer]]), roi_scale=None)
    tracker.update(frame, 0.0)
    track = tracker.update(frame, 1 / 30.0)
    np.testing.assert_allclose(track.raw_keypoints, first.keypoints)


def test_choose_face_hook_picks_the_person():
    frame = np.zeros((480, 640, 3), np.uint8)
    left, right = fake_face(150, 240, size=120), fake_face(480, 240, size=90)
    seen = []

    def choose_rightmost(faces, image):
        seen.append((len(faces), image.shape))
        return max(faces, key=lambda face: face.center[0])

    tracker = Tracker(ScriptedDetector([[left, right]]), roi_scale=None, choose_face=choose_rightmost)
    track = tracker.update(frame, 0.0)
    np.testing.assert_allclose(track.raw_keypoints, right.keypoints)
    assert seen == [(2, frame.shape)]
    # A hook returning None means "nobody to restore".
    tracker = Tracker(ScriptedDetector([[left, right]]), roi_scale=None, choose_face=lambda faces, image: None)
    assert tracker.update(frame, 0.0) is None


def test_a_new_face_starts_a_fresh_track():
    frame = np.zeros((480, 640, 3), np.uint8)
    first, second = fake_face(150, 240, size=100), fake_face(500, 240, size=100)
    tracker = Tracker(ScriptedDetector([[first], [first], [second]]), roi_scale=None)
    tracker.update(frame, 0.0)
    old = tracker.update(frame, 1 / 30)
    new = tracker.update(frame, 2 / 30)
    assert new.track_id == old.track_id + 1
    # no smoothing across people: the new track starts exactly on the new face
    np.testing.assert_allclose(new.keypoints, second.keypoints, atol=1e-3)
