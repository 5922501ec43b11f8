"""Fixtures shared by the runtime tests: a face clip and the astronaut's detected face."""

import pytest

from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, astronaut, write_clip
from tests.support.pipelines import face_frames


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return write_clip(folder / "talk.mp4", face_frames(20), fps=25, audio=True)


@pytest.fixture(scope="module")
def image_detector():
    detector = FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def astronaut_face(image_detector):
    faces = image_detector.detect(astronaut())
    assert len(faces) == 1
    return faces[0]
