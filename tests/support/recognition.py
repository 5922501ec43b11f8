"""Two people in one frame, and how much a face region changed."""

import cv2
import numpy as np
from PIL import Image

from instantrestore.runtime.identity import shared_recognizer
from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S
from tests.support.people import astronaut, hopper


def largest_face(image, detector):
    faces = detector.detect(image)
    return max(faces, key=lambda face: face.area) if faces else None


def descriptor(image, detector):
    return shared_recognizer().embed(image, [largest_face(image, detector).box])[0]


def two_people(shift=0):
    """Eileen Collins (left, the smaller face) and Grace Hopper (right, larger) side by side, 480x240."""
    left = np.ascontiguousarray(astronaut()[20:260, 100:340])
    right = cv2.resize(hopper()[60:440, 70:460], (240, 240), interpolation=cv2.INTER_AREA)
    frame = np.concatenate([left, right], axis=1)
    return np.ascontiguousarray(np.roll(frame, shift, axis=1))


def face_boxes(frame):
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        faces = sorted(detector.detect(frame), key=lambda face: face.center[0])
    assert len(faces) == 2
    return [tuple(int(round(v)) for v in face.box) for face in faces]


def inner(box):
    x0, y0, x1, y1 = box
    q = (x1 - x0) // 4
    return slice(y0 + q, y1 - q), slice(x0 + q, x1 - q)


def change(output, frame, box) -> float:
    region = inner(box)
    return float(np.abs(output[region].astype(np.int16) - frame[region].astype(np.int16)).mean())


# ------------------------------------------------------------------------- the commands, end to end


def save(folder, name, image):
    Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
    return folder / name
