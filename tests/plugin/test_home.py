"""The state folder and the profiles kept in it."""

import os
import sys

import numpy as np
import pytest

from instantrestore.plugin import home as state
from instantrestore.plugin import home
from instantrestore.runtime.identity import MATCH_DISTANCE
from instantrestore.runtime.tracking import FaceDetector

from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S
from tests.support.people import astronaut, hopper
from tests.support.recognition import descriptor


@pytest.mark.timeout(300)
def test_a_profile_from_before_recognition_is_upgraded_once(two_person_home, monkeypatch):
    from instantrestore.runtime import Profile

    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    bundle = home.resolve_bundle()
    current = Profile.load(home.profile_path("eileen"))
    old = home.profile_path("old-eileen")
    current.embeddings = None
    current.save(old)
    assert Profile.load(old).embeddings is None
    upgraded = home.load_profile("old-eileen", bundle)
    assert upgraded.embeddings is not None
    assert Profile.load(old).embeddings is not None  # written back: once
    # the descriptors from the 128-pixel thumbnails still recognise her and only her
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        probe_e, probe_g = descriptor(astronaut(), detector), descriptor(hopper(), detector)
    distances = lambda probe: np.linalg.norm(np.asarray(upgraded.embeddings) - probe, axis=1).min()  # noqa: E731
    assert distances(probe_e) < MATCH_DISTANCE < distances(probe_g)


@pytest.mark.timeout(300)
def test_an_old_profile_of_two_people_is_refused(two_person_home, monkeypatch):
    from instantrestore.runtime import Profile, ProfileError

    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    eileen, grace = Profile.load(home.profile_path("eileen")), Profile.load(home.profile_path("grace"))
    eileen.thumbnails = eileen.thumbnails.clone()
    eileen.thumbnails[1] = grace.thumbnails[0]  # made before recognition, from photos of two people
    eileen.embeddings = None
    eileen.save(home.profile_path("mixed-old"))
    with pytest.raises(ProfileError, match="enroll again"):
        home.load_profile("mixed-old", home.resolve_bundle())


# ------------------------------------------------------------------------------------------ state folder


def test_state_dir_env_and_platform_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(state.HOME_ENV, str(tmp_path / "x"))
    assert state.state_dir() == (tmp_path / "x").resolve()
    assert state.engines_dir() == (tmp_path / "x").resolve() / "engines"
    monkeypatch.delenv(state.HOME_ENV)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(state.Path, "home", classmethod(lambda cls: tmp_path / "user"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert state.state_dir() == tmp_path / "user" / ".local" / "share" / "instantrestore"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert state.state_dir() == tmp_path / "user" / "Library" / "Application Support" / "instantrestore"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert state.state_dir() == tmp_path / "Local" / "instantrestore"


# ------------------------------------------------------------------------------------------------ state


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_state_lives_under_instantrestore_home(fresh_home, tiny_bundle):
    assert home.state_dir() == fresh_home.resolve()
    assert home.last_bundle_dir() is None
    home.remember_bundle(tiny_bundle)
    assert home.last_bundle_dir() == tiny_bundle.resolve()
    assert home.resolve_bundle().bundle_id == home.resolve_bundle(tiny_bundle).bundle_id


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_profiles_into_a_pipe_closed_early_ends_quietly(fresh_home):
    import subprocess

    (fresh_home / "profiles").mkdir(parents=True)
    for index in range(3000):  # far more lines than a pipe holds, so writing meets the closed pipe
        (fresh_home / "profiles" / f"p{index:04d}.safetensors").write_bytes(b"")
    command = f"{sys.executable} -m instantrestore.plugin.cli profiles | head -2; echo status ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "INSTANTRESTORE_HOME": str(fresh_home)})
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["p0000", "p0001", "status 141"]
    assert done.stderr == ""  # no "Broken pipe" error, no traceback
