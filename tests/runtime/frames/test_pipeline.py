"""FramePipeline: what changes in a frame and what does not, the restorer's batch buffer, bad restorer output,
a face far from the camera, overlapping faces."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime import align
from instantrestore.runtime.composite import face_mask
from instantrestore.runtime.frames.file_run import run_file
from instantrestore.runtime.frames.pipeline import FramePipeline, PipelineOptions
from instantrestore.runtime.frames.work import PipelineError
from instantrestore.runtime.identity import Identities
from instantrestore.runtime.media import MemorySource
from instantrestore.runtime.tracking import FaceDetector

from tests.runtime.frames.scenes import FPS, SCENE_CROP, live, pasted, pipeline_for
from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, RecordingSink, no_face_image
from tests.support.people import astronaut
from tests.support.pipelines import CROP, close_all, face_frames, make_pipeline


@pytest.mark.timeout(120)
def test_no_face_frames_pass_through_bit_exact():
    pipeline = make_pipeline()
    try:
        for index in range(5):
            frame = no_face_image()
            before = frame.copy()
            out = pipeline.process(frame, index / 30.0)
            assert out is frame
            np.testing.assert_array_equal(out, before)
        assert pipeline.stats.summary()["no_face"] == 5
        batch = [no_face_image() for _ in range(3)]
        outputs = pipeline.process_batch(batch, [1.0, 1.1, 1.2])
        assert all(out is frame for out, frame in zip(outputs, batch))
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_only_the_face_region_changes():
    pipeline = make_pipeline()
    try:
        for index, frame in enumerate(face_frames(6)):
            images, located = pipeline.locate_batch([frame], [index / 25.0])  # process(), step by step
            out = pipeline.composite_batch(images, located, pipeline.restore_located(located))[0]
            (face,) = located[0]
            matrix = face.matrix
            inverse = align.invert_matrix(matrix)
            inside = cv2.warpAffine(face_mask(CROP), inverse, (frame.shape[1], frame.shape[0]), borderValue=0.0) > 0
            np.testing.assert_array_equal(out[~inside], frame[~inside])
            assert np.abs(out[inside].astype(int) - frame[inside].astype(int)).mean() > 20
        summary = pipeline.stats.summary()
        for stage in ("track", "align", "restore", "composite"):
            assert summary["stages"][stage]["count"] == 6
    finally:
        close_all(pipeline)


@pytest.mark.timeout(120)
def test_batched_processing_matches_frame_by_frame():
    frames = face_frames(8)
    stamps = [index / 25.0 for index in range(8)]
    single = make_pipeline()
    batched = make_pipeline()
    calls = []

    def counting_restore(batch):
        calls.append(len(batch))
        return 255 - batch

    batched.restore = counting_restore
    try:
        one_by_one = [single.process(frame, stamp) for frame, stamp in zip(frames, stamps)]
        together = batched.process_batch(frames[:4], stamps[:4]) + batched.process_batch(frames[4:], stamps[4:])
        for a, b in zip(one_by_one, together):
            np.testing.assert_array_equal(a, b)
        assert calls == [4, 4]
    finally:
        close_all(single)
        close_all(batched)


@pytest.mark.timeout(120)
def test_the_restorer_is_handed_the_buffer_the_crops_were_warped_into(tmp_path):
    from instantrestore.runtime.media import MemorySource

    frames = face_frames(7)
    originals = [frame.copy() for frame in frames]  # run_file pastes into the frames it is given
    handed, located_batches = [], []
    pipeline = make_pipeline(restore=lambda batch: handed.append(batch) or 255 - batch)
    restore_located = pipeline.restore_located

    def noting(located):
        located_batches.append(located)
        return restore_located(located)

    pipeline.restore_located = noting
    try:
        run_file(pipeline, MemorySource(frames, 25), RecordingSink(), batch_size=3)
    finally:
        close_all(pipeline)
    assert [len(batch) for batch in handed] == [3, 3, 1]
    for batch, located in zip(handed, located_batches):
        faces = [face for frame_faces in located for face in frame_faces]
        assert batch.base is faces[0].crops and batch.shape == faces[0].crops.shape  # the buffer, not a copy
        assert [face.slot for face in faces] == list(range(len(faces)))
    placed = [faces for located in located_batches for faces in located]
    for original, (face,) in zip(originals, placed):
        np.testing.assert_array_equal(face.crop, align.warp_to_crop(original, face.matrix, CROP))


@pytest.mark.timeout(120)
def test_each_profile_gets_consecutive_slots_of_the_batch_buffer():
    frames = face_frames(3)
    keypoints = align.template_points(CROP) / CROP * 120.0 + 60.0  # a face in the middle of each frame
    handed = []
    pipeline = make_pipeline(restore=lambda batch: handed.append(batch) or 255 - batch)
    try:
        located = pipeline.align(frames, [[(keypoints, "eileen", 1.0), (keypoints + 5.0, "grace", 1.0)]] * 3)
        restored = pipeline.restore_located(located)
    finally:
        close_all(pipeline)
    faces = [face for frame_faces in located for face in frame_faces]
    assert [face.slot for face in faces] == [0, 3, 1, 4, 2, 5]
    assert [(batch.base is faces[0].crops, len(batch)) for batch in handed] == [(True, 3), (True, 3)]
    for frame, frame_faces in zip(frames, located):
        for face in frame_faces:
            np.testing.assert_array_equal(face.crop, align.warp_to_crop(frame, face.matrix, CROP))
    np.testing.assert_array_equal(restored.crops, 255 - np.stack([face.crop for face in faces]))


@pytest.mark.timeout(120)
def test_restorer_returning_the_wrong_shape_is_a_clear_error():
    pipeline = make_pipeline(restore=lambda batch: batch[:, ::2])
    try:
        with pytest.raises(PipelineError, match="restorer returned"):
            pipeline.process(face_frames(1)[0], 0.0)
        with pytest.raises(PipelineError):
            pipeline.process(np.zeros((10, 10), np.uint8), 0.0)
    finally:
        close_all(pipeline)


@pytest.mark.timeout(300)
def test_file_mode_restores_a_face_far_from_the_camera(gallery):
    """Her face 88 pixels wide in 1280x720 (a wide shot): short-range BlazeFace skips it; a recording is also
    searched with full-range BlazeFace, so she is restored there."""
    frame = np.full((720, 1280, 3), 120, np.uint8)
    frame[100:540, 400:840] = cv2.resize(astronaut(), (440, 440), interpolation=cv2.INTER_AREA)
    frames = [frame] * 6
    far = FramePipeline({"eileen": lambda crops: 255 - crops}, SCENE_CROP, identities=Identities(gallery),
                        options=PipelineOptions(color_match=False, far=True))
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


@pytest.mark.timeout(300)
def test_overlapping_faces_blend_without_seams():
    """Two real faces close together (her photo twice, 100 px apart), so their feathered edges overlap; one is
    restored red, the other blue. Where both masks weigh, the result does not depend on their order (each face by
    its own weight); pasting one over the other (as before) let the later one cover the first's edge."""
    from instantrestore.runtime.align import alignment_matrix, warp_to_crop
    from instantrestore.runtime.composite import Blending, Compositor, paste_back

    her = np.ascontiguousarray(astronaut()[40:230, 130:320])
    frame = np.full((200, 300, 3), 120, np.uint8)
    frame[5:195, 0:190], frame[5:195, 100:290] = her, her
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        faces = sorted(detector.detect(frame), key=lambda face: face.center[0])
    assert len(faces) == 2
    pastes, weights = [], []
    for face, colour in zip(faces, [(255, 0, 0), (0, 0, 255)]):
        matrix = alignment_matrix(face.keypoints, SCENE_CROP)
        pastes.append((np.full((SCENE_CROP, SCENE_CROP, 3), colour, np.uint8), matrix,
                       warp_to_crop(frame, matrix, SCENE_CROP), 1.0))
        white = np.full((SCENE_CROP, SCENE_CROP, 3), 255, np.uint8)
        weights.append(paste_back(np.zeros_like(frame), white, matrix, blending=Blending(color_match=False))[:, :, 0] / 255.0)
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
