"""When and where a face is pasted, per mode (live: One Euro; file: the look-ahead fit): no paste outlives the face,
a detector blink, a moving face not trailed, a still face held still."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime.align import invert_matrix
from instantrestore.runtime.tracking import FaceDetection, FaceDetector, Tracker

from tests.runtime.frames.scenes import SCENE_CROP, file_mode, live, pasted, pipeline_for
from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, apply_affine, no_face_image, placed_face
from tests.support.people import astronaut


def cut_clip():
    """10 frames of her, then a cut to an empty room (skimage's coffee photo as the room)."""
    face = [placed_face((480, 360), 0.8, (60.0, 0.0))[0] for _ in range(10)]
    room = cv2.resize(no_face_image(480, 360), (480, 360))
    return face + [room] * 8


def walk_out_clip():
    """Her in front of a room for 10 frames, then the same room without her (she stepped out of view)."""
    room = cv2.resize(no_face_image(480, 360), (480, 360))
    her = np.ascontiguousarray(astronaut()[20:260, 100:340])
    with_her = room.copy()
    with_her[60:300, 120:360] = her
    return [with_her] * 10 + [room] * 8


@pytest.mark.timeout(300)
@pytest.mark.parametrize("clip", [cut_clip, walk_out_clip])
def test_no_paste_outlives_the_face(gallery, clip):
    frames = clip()
    for mode in (live, file_mode):
        changed = pasted(mode(pipeline_for(gallery), frames), frames)
        assert all(count > 500 for count in changed[:10]), (mode.__name__, changed)
        assert changed[10:] == [0] * 8, (mode.__name__, changed)  # the room is never painted on


def scripted_tracker(script):
    class Scripted:
        calls = 0

        def detect(self, frame, timestamp_s=None):
            faces = script[min(Scripted.calls, len(script) - 1)]
            Scripted.calls += 1
            return list(faces)

        def close(self):
            pass

    return Tracker(Scripted(), roi_scale=None)


@pytest.mark.timeout(300)
def test_a_detector_blink_fades_live_and_is_bridged_in_file_mode(gallery):
    """Her face stays in view, but the detector misses it on frames 4 and 5: live holds it and fades the paste
    out (it cannot know she is still there); file mode sees her found again on frame 6 and keeps the paste whole.
    When the detector loses her for good (frames 10-), live fades for two frames and file mode stops at once."""
    frame, matrix = placed_face((480, 360), 0.8, (60.0, 0.0))
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        seen = max(detector.detect(frame), key=lambda f: f.area)
    found = [FaceDetection(seen.keypoints, seen.box, seen.score)]
    script = [found] * 4 + [[]] * 2 + [found] * 4 + [[]] * 4
    frames = [frame] * len(script)
    changes = {}
    for mode in (live, file_mode):
        outputs = mode(pipeline_for(gallery, scripted_tracker(script)), frames)
        x0, y0, x1, y1 = (int(v) for v in seen.box)
        centre = (slice((y0 * 3 + y1) // 4, (y0 + y1 * 3) // 4), slice((x0 * 3 + x1) // 4, (x0 + x1 * 3) // 4))
        changes[mode.__name__] = [float(np.abs(o[centre].astype(np.int16) - f[centre]).mean())
                                  for o, f in zip(outputs, frames)]
    full = changes["live"][0]
    assert full > 60
    np.testing.assert_allclose(changes["live"][4:6], [full * 2 / 3, full / 3], rtol=0.05)  # fading out
    np.testing.assert_allclose(changes["live"][10:12], [full * 2 / 3, full / 3], rtol=0.05)
    assert changes["live"][12:] == [0.0, 0.0]
    np.testing.assert_allclose(changes["file_mode"][:10], [full] * 10, rtol=0.05)  # the blink bridged
    assert changes["file_mode"][10:] == [0.0] * 4  # never pasted where it was not found again


SCALE, SPEED = 1.3, 6.0  # her face about 133 pixels wide in 640x480; 6 pixels a frame is a head turn on a call


def path_frames(offsets, noise=2.0, seed=0):
    """Her photo placed at each (x, y) offset, with sensor noise: frames and the placements."""
    rng = np.random.default_rng(seed)
    frames, placements = [], []
    for offset in offsets:
        frame, matrix = placed_face((640, 480), SCALE, offset)
        frames.append(np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8))
        placements.append(matrix)
    return frames, placements


def paste_points(mode, gallery, frames) -> np.ndarray:
    """Where the paste put the crop's centre and its two upper corners, in frame pixels, per frame."""
    record = []
    mode(pipeline_for(gallery, record=record), frames)
    corners = np.array([[SCENE_CROP / 2, SCENE_CROP / 2], [0.0, 0.0], [SCENE_CROP, 0.0]])
    return np.array([apply_affine(invert_matrix(faces[0]), corners) for faces in record])


def trailing(mode, gallery) -> tuple:
    """(pixels, fraction of the face width) by which the paste trails her face moving at SPEED along x, measured
    while she moves steadily (frames 15 to 45 of 60): the paste's offset from where it sits on her still face,
    carried along her known path. She crosses the same ground rightwards and leftwards: the detector's own bias
    at a place is the same both ways and cancels, a trailing paste is behind her both ways and adds up."""
    still_frames, still_placements = path_frames([(-20.0, -40.0)] * 20, seed=1)
    still = paste_points(mode, gallery, still_frames)[10:].mean(axis=0)  # her face's point, still
    in_photo = apply_affine(np.linalg.inv(np.vstack([still_placements[0], [0, 0, 1]]))[:2], still)
    lags = []
    for direction, start in ((1.0, -120.0), (-1.0, 234.0)):
        frames, placements = path_frames([(start + direction * SPEED * index, -40.0) for index in range(60)])
        points = paste_points(mode, gallery, frames)
        expected = np.array([apply_affine(p, in_photo) for p in placements])
        lags.append(-direction * (points - expected)[15:45, :, 0].mean())  # positive: behind her
    lag = float(np.mean(lags))
    return lag, lag / (SCALE * 102.0)


def steadiness(mode, gallery) -> tuple:
    """Her holding still for 50 frames (after 15 to settle), with sensor noise: the largest move of the paste's
    points from their mean, and the largest move from one frame to the next."""
    frames, _ = path_frames([(-20.0, -40.0)] * 65, seed=2)
    points = paste_points(mode, gallery, frames)[15:]
    spread = np.linalg.norm(points - points.mean(axis=0), axis=2).max()
    return float(spread), float(np.linalg.norm(np.diff(points, axis=0), axis=2).max())


@pytest.mark.timeout(300)
def test_file_mode_paste_does_not_trail_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(file_mode, gallery)
    assert abs(fraction) <= 0.03, (pixels, fraction)
    spread, step = steadiness(file_mode, gallery)
    assert spread <= 0.5 and step <= 0.15, (spread, step)


@pytest.mark.timeout(300)
def test_live_paste_keeps_up_with_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(live, gallery)
    assert abs(fraction) <= 0.05, (pixels, fraction)
    spread, step = steadiness(live, gallery)
    assert spread <= 1.0 and step <= 0.3, (spread, step)


@pytest.mark.timeout(300)
def test_each_mode_smooths_a_face_once(gallery):
    """Live, the tracker's One Euro filter places the face; in a file the look-ahead fit of the raw detections
    does, so there the tracker passes its detections on unsmoothed (its smoothing would be thrown away)."""
    frames, _ = path_frames([(-60.0 + SPEED * index, -40.0) for index in range(16)], seed=3)
    smoothed_by = {}
    for mode in (live, file_mode):
        pipeline, tracks = pipeline_for(gallery), []
        update_all = pipeline.tracker.update_all

        def noting(frame, timestamp_s=None):
            found = update_all(frame, timestamp_s)
            tracks.extend(track for track in found if track.missed == 0)
            return found

        pipeline.tracker.update_all = noting
        mode(pipeline, frames)
        assert len(tracks) == len(frames)
        smoothed_by[mode.__name__] = max(float(np.abs(t.keypoints - t.raw_keypoints).max()) for t in tracks)
    assert smoothed_by["file_mode"] == 0.0
    assert smoothed_by["live"] > 0.5  # pixels: One Euro moved the keypoints of the moving, noisy face
