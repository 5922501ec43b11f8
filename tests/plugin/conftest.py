"""Fixtures for the command tests: selfies, a clip, a state folder with a bundle and a profile."""

import numpy as np
import pytest
import pyvirtualcam
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.cli import main

from tests.support.commands import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE
from tests.support.media_helpers import BrokenVirtualCamera, RecordingVirtualCamera, astronaut, placed_face, write_clip
from tests.support.people import hopper
from tests.support.recognition import save


@pytest.fixture(scope="module")
def selfies(tmp_path_factory):
    """Four astronaut "selfies": as is, mirrored, cropped, brighter; JPEG and PNG."""
    folder = tmp_path_factory.mktemp("selfies")
    face = astronaut()
    variants = {
        "me1.jpg": face,
        "me2.png": face[:, ::-1],
        "me3.jpg": face[16:470, 24:478],
        "me4.jpg": np.clip(face.astype(np.int16) + 30, 0, 255).astype(np.uint8),
    }
    paths = []
    for name, image in variants.items():
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A short clip of a face drifting over a grey background, with an AAC tone."""
    folder = tmp_path_factory.mktemp("clip")
    frames = [placed_face(CLIP_SIZE, 0.45, (60.0 + 2 * i, 10.0 + i))[0] for i in range(CLIP_FRAMES)]
    return write_clip(folder / "talk.mp4", frames, fps=CLIP_FPS, audio=True)


@pytest.fixture(scope="module")
def state(tmp_path_factory, tiny_bundle, selfies):
    """A state folder with the miniature bundle recorded as the default and the profile "me" enrolled
    through the CLI."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(folder))
        home.remember_bundle(tiny_bundle)
        code = main(["enroll", *map(str, selfies), "--name", "me"])
    assert code == 0
    return folder


@pytest.fixture
def in_state(state, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(state))
    return state


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    folder = tmp_path / "fresh-home"
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    return folder


# ------------------------------------------------------------------------------------------------ camera


@pytest.fixture
def recording_backend():
    pyvirtualcam.register_backend("recording", RecordingVirtualCamera)
    pyvirtualcam.register_backend("broken", BrokenVirtualCamera)
    RecordingVirtualCamera.instances.clear()
    yield RecordingVirtualCamera
    pyvirtualcam.camera.BACKENDS.pop("recording", None)
    pyvirtualcam.camera.BACKENDS.pop("broken", None)


@pytest.fixture(scope="module")
def two_person_home(tmp_path_factory, tiny_bundle):
    folder = tmp_path_factory.mktemp("faces-home")
    photos = tmp_path_factory.mktemp("faces-photos")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(folder))
        home.remember_bundle(tiny_bundle)
        eileen = [save(photos, "e1.jpg", astronaut()), save(photos, "e2.png", astronaut()[:, ::-1])]
        grace = [save(photos, "g1.jpg", hopper()), save(photos, "g2.png", hopper()[:, ::-1])]
        assert main(["enroll", *map(str, eileen), "--name", "eileen"]) == 0
        assert main(["enroll", *map(str, grace), "--name", "grace"]) == 0
    return folder, photos
