"""When and where a restored face is pasted: never without a face under it (cuts, a person leaving, detector
blinks), and on the face, not behind it, as a real photo moves along a known path. Live (FramePipeline.process,
frame by frame) and file mode (run_file, which looks ahead)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from media_helpers import MEDIAPIPE_TIMEOUT_S, RecordingSink, apply_affine, no_face_image, placed_face  # noqa: E402
from people import astronaut  # noqa: E402

from instantrestore.runtime.align import invert_matrix  # noqa: E402
from instantrestore.runtime.identity import Identities, shared_recognizer  # noqa: E402
from instantrestore.runtime.media import MemorySource  # noqa: E402
from instantrestore.runtime.pipeline import FramePipeline, run_file  # noqa: E402
from instantrestore.runtime.tracking import FaceDetection, FaceDetector, Tracker  # noqa: E402

pytestmark = pytest.mark.timeout(300)
CROP, FPS = 128, 25.0


@pytest.fixture(scope="module")
def gallery():
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        face = max(detector.detect(astronaut()), key=lambda f: f.area)
    return {"eileen": shared_recognizer().embed(astronaut(), [face.box])}


def pipeline_for(gallery, tracker=None, record=None):
    tracker = tracker or Tracker(FaceDetector(mode="video", timeout_s=MEDIAPIPE_TIMEOUT_S))
    pipeline = FramePipeline({"eileen": lambda crops: 255 - crops}, CROP, tracker=tracker, color_match=False,
                             identities=Identities(gallery))
    if record is not None:  # where each face was pasted, per frame
        composite = pipeline.composite_batch

        def noting(frames, located, restored, **options):
            record.extend([[face.matrix for face in faces] for faces in located])
            return composite(frames, located, restored, **options)

        pipeline.composite_batch = noting
    return pipeline


def live(pipeline, frames):
    try:
        return [pipeline.process(frame, index / FPS) for index, frame in enumerate(frames)]
    finally:
        pipeline.tracker.detector.close()


def file_mode(pipeline, frames):
    sink = RecordingSink()
    try:
        run_file(pipeline, MemorySource(frames, FPS), sink)
    finally:
        pipeline.tracker.detector.close()
    return sink.frames


def pasted(outputs, frames) -> list:
    """Per frame: how many pixels the paste changed."""
    return [int((np.abs(o.astype(np.int16) - f.astype(np.int16)).max(axis=2) > 8).sum()) for o, f in zip(outputs, frames)]


# ---------------------------------------------------------------------------------------------- when


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


# --------------------------------------------------------------------------------------------- where

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
    corners = np.array([[CROP / 2, CROP / 2], [0.0, 0.0], [CROP, 0.0]])
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


def test_file_mode_paste_does_not_trail_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(file_mode, gallery)
    assert abs(fraction) <= 0.03, (pixels, fraction)
    spread, step = steadiness(file_mode, gallery)
    assert spread <= 0.5 and step <= 0.15, (spread, step)


def test_live_paste_keeps_up_with_a_moving_face_and_holds_still(gallery):
    pixels, fraction = trailing(live, gallery)
    assert abs(fraction) <= 0.05, (pixels, fraction)
    spread, step = steadiness(live, gallery)
    assert spread <= 1.0 and step <= 0.3, (spread, step)


# ------------------------------------------------------------------------------------------ small faces


def test_file_mode_restores_a_face_far_from_the_camera(gallery):
    """Her face 88 pixels wide in 1280x720 (a wide shot): short-range BlazeFace skips it; a recording is also
    searched with full-range BlazeFace, so she is restored there."""
    frame = np.full((720, 1280, 3), 120, np.uint8)
    frame[100:540, 400:840] = cv2.resize(astronaut(), (440, 440), interpolation=cv2.INTER_AREA)
    frames = [frame] * 6
    far = FramePipeline({"eileen": lambda crops: 255 - crops}, CROP, color_match=False, far=True,
                        identities=Identities(gallery))
    try:
        sink = RecordingSink()
        run_file(far, MemorySource(frames, FPS), sink)
    finally:
        far.close()
    face = (slice(180, 240), slice(555, 615))  # the middle of her face
    assert all(np.abs(out[face].astype(np.int16) - frame[face]).mean() > 60 for out in sink.frames)
    assert far.stats.summary()["faces_restored"] == 6
    near = pipeline_for(gallery)  # the camera's detector: short-range only
    assert pasted(live(near, frames), frames) == [0] * 6


def test_overlapping_faces_blend_without_seams():
    """Two real faces close together (her photo twice, 100 px apart), so their feathered edges overlap; one is
    restored red, the other blue. Where both masks weigh, the result does not depend on their order (each face by
    its own weight); pasting one over the other (as before) let the later one cover the first's edge."""
    from instantrestore.runtime.align import alignment_matrix, warp_to_crop
    from instantrestore.runtime.composite import Compositor, paste_back

    her = np.ascontiguousarray(astronaut()[40:230, 130:320])
    frame = np.full((200, 300, 3), 120, np.uint8)
    frame[5:195, 0:190], frame[5:195, 100:290] = her, her
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        faces = sorted(detector.detect(frame), key=lambda face: face.center[0])
    assert len(faces) == 2
    pastes, weights = [], []
    for face, colour in zip(faces, [(255, 0, 0), (0, 0, 255)]):
        matrix = alignment_matrix(face.keypoints, CROP)
        pastes.append((np.full((CROP, CROP, 3), colour, np.uint8), matrix, warp_to_crop(frame, matrix, CROP), 1.0))
        white = np.full((CROP, CROP, 3), 255, np.uint8)
        weights.append(paste_back(np.zeros_like(frame), white, matrix, color_match=False)[:, :, 0] / 255.0)
    both = (weights[0] > 0.05) & (weights[1] > 0.05)
    assert both.sum() > 50, both.sum()  # the masks do overlap
    compositor = Compositor(color_match=False)
    one_way, other_way = compositor.many(frame, pastes), compositor.many(frame, pastes[::-1])
    np.testing.assert_array_equal(one_way, other_way)
    def one_over_the_other(order):  # as before: each paste covers the last one's edge
        covered = frame
        for crop, matrix, original, _ in order:
            covered = compositor(covered, crop, matrix, original_crop=original)
        return covered[both].astype(int)

    assert np.abs(one_over_the_other(pastes) - one_over_the_other(pastes[::-1])).max() >= 3
