"""The tracker: following faces over frames, smoothing, short gaps, the main face."""

import numpy as np
import pytest

from instantrestore.runtime import align, tracking
from instantrestore.runtime.tracking import FaceDetection, Tracker

from tests.support.media_helpers import apply_affine, placed_face
from tests.support.tracking_helpers import video_detector, moving_clip


pytestmark = pytest.mark.timeout(120)


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
