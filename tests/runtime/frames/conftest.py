"""The enrolled person of the scene tests (tests/runtime/frames/scenes.py): the astronaut's face embedding."""

import pytest

from instantrestore.runtime.identity import shared_recognizer
from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S
from tests.support.people import astronaut


@pytest.fixture(scope="module")
def gallery():
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        face = max(detector.detect(astronaut()), key=lambda f: f.area)
    return {"eileen": shared_recognizer().embed(astronaut(), [face.box])}
