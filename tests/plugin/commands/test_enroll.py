"""`instantrestore enroll`: photos checked, faces found, profiles written."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.commands import enroll
from instantrestore.plugin.cli import main
from instantrestore.runtime import Profile
from instantrestore.runtime.identity import MATCH_DISTANCE
from instantrestore.runtime.tracking import FaceDetector

from tests.support.commands import assert_clear_error, listing, run
from tests.support.media_helpers import MEDIAPIPE_TIMEOUT_S, astronaut, no_face_image
from tests.support.people import hopper
from tests.support.recognition import descriptor, save
from tests.support.searches import noting_searches


def test_enroll_and_the_panel_check_photos_with_the_runtime_search(monkeypatch, tmp_path):
    from PIL import Image

    searched = noting_searches(monkeypatch)
    Image.fromarray(astronaut()).save(tmp_path / "me.png")
    (result,) = enroll.check_selfies([tmp_path / "me.png"], 128).values()
    assert isinstance(result, enroll.Selfie) and searched == [(512, 512, 3)]
    assert result.face.crop.shape == (128, 128, 3)


@pytest.mark.timeout(300)
def test_enroll_refuses_two_people_under_one_name_naming_the_odd_photo(two_person_home, monkeypatch, capsys):
    folder, photos = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    code = main(["enroll", str(photos / "e1.jpg"), str(photos / "e2.png"), str(photos / "g1.jpg"), "--name", "mixed"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "g1.jpg" in err and "e1.jpg" not in err and "same person" in err, err
    assert not home.profile_path("mixed").exists()


@pytest.mark.timeout(300)
def test_enroll_says_when_it_ignored_a_smaller_face(two_person_home, tmp_path, monkeypatch, capsys):
    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    photo = np.full((800, 800, 3), 120, np.uint8)  # her face 407 px; Grace Hopper behind her, 119 px
    photo[:720, :720] = cv2.resize(astronaut()[50:230, 135:315], (720, 720))
    photo[608:, 632:] = cv2.resize(hopper()[100:420, 130:410], (168, 192))
    code = main(["enroll", str(save(tmp_path, "with_friend.jpg", photo)), "--name", "eileen2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "with_friend.jpg: 1 smaller face ignored" in err
    profile = home.load_profile("eileen2", home.resolve_bundle())
    with FaceDetector(mode="image", timeout_s=MEDIAPIPE_TIMEOUT_S) as detector:
        probe = descriptor(astronaut(), detector)
    assert np.linalg.norm(np.asarray(profile.embeddings)[0] - probe) < MATCH_DISTANCE  # hers, not Grace's


@pytest.fixture(scope="module")
def bad_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_photos")
    face = astronaut()[20:260, 100:340]
    Image.fromarray(no_face_image(400, 300)).save(folder / "landscape.jpg")
    Image.fromarray(np.ascontiguousarray(np.concatenate([face, face[:, ::-1]], axis=1))).save(folder / "two_people.jpg")
    Image.fromarray(cv2.resize(astronaut(), (128, 128), interpolation=cv2.INTER_AREA)).save(folder / "far_away.jpg")
    (folder / "notes.jpg").write_bytes(b"this is not a JPEG")
    group = np.full((1500, 2000, 3), 120, np.uint8)  # two people, each small in a large photo
    group[200:712, 100:612] = astronaut()
    group[600:1112, 1200:1712] = astronaut()[:, ::-1]
    Image.fromarray(group).save(folder / "group.jpg")
    return folder


# ------------------------------------------------------------------------------------------------ enroll


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_writes_a_profile_with_thumbnails(in_state, tiny_bundle, selfies, capsys):
    path = home.profile_path("me")
    assert path.is_file()
    profile = Profile.load(path, bundle_id=home.resolve_bundle().bundle_id)
    assert profile.count == 4
    assert profile.thumbnails.dtype == torch.uint8 and profile.thumbnails.shape[0] == 4
    assert profile.thumbnails.shape[-1] == 3
    assert profile.metadata["name"] == "me"
    assert profile.metadata["sources"] == [p.name for p in selfies]
    # the aligned thumbnails show a face in the middle, not the grey of an empty crop
    assert profile.thumbnails.float().std() > 20
    code, out, err = run(capsys, "profiles")
    assert code == 0 and out.startswith("me\t4 photos") and "current bundle" in out


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_with_one_photo_hints_at_four_and_profiles_remove(in_state, selfies, capsys):
    code, out, err = run(capsys, "enroll", selfies[0], "--name", "solo")
    assert code == 0
    assert out.strip() == str(home.profile_path("solo"))
    assert "tip: 4 selfies" in err
    assert Profile.load(home.profile_path("solo")).count == 1
    code, out, err = run(capsys, "profiles", "remove", "solo")
    assert code == 0 and not home.profile_path("solo").exists()
    code, out, err = run(capsys, "profiles", "remove", "solo")
    assert_clear_error(code, err, "no profile named 'solo'")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(
    "photo, message",
    [
        ("landscape.jpg", "no face found"),
        ("two_people.jpg", "2 faces found"),
        ("group.jpg", "2 faces found"),
        ("far_away.jpg", "the face is too small"),
        ("notes.jpg", "not a readable image"),
        ("missing.jpg", "file not found"),
    ],
)
def test_enroll_refuses_a_bad_photo_naming_it(in_state, selfies, bad_photos, photo, message, capsys):
    before = listing(in_state)
    code, out, err = run(capsys, "enroll", selfies[0], bad_photos / photo, "--name", "bad")
    assert_clear_error(code, err, photo, message)
    assert listing(in_state) == before and out == ""


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_lists_every_bad_photo_in_one_line(in_state, bad_photos, capsys):
    photos = [bad_photos / name for name in ("notes.jpg", "landscape.jpg", "two_people.jpg")]
    code, _, err = run(capsys, "enroll", *photos, "--name", "bad")
    last = assert_clear_error(code, err, "notes.jpg", "landscape.jpg", "two_people.jpg")
    assert last.index("notes.jpg") < last.index("landscape.jpg") < last.index("two_people.jpg")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_refuses_bad_names_and_missing_bundle(fresh_home, selfies, capsys):
    for name in ("../escape", "nl\n", "me\x00", ".hidden", "a" * 65):
        code, _, err = run(capsys, "enroll", selfies[0], "--name", name)
        assert_clear_error(code, err, f"bad profile name {name!r}")
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me")  # fresh home: no bundle recorded
    assert_clear_error(code, err, "no model bundle yet", "instantrestore export")
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me", "--bundle", fresh_home / "nowhere")
    assert_clear_error(code, err, "does not exist")
    assert not fresh_home.exists() or listing(fresh_home) == set()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_checks_every_photo_even_tiny_and_damaged_ones(in_state, selfies, bad_photos, tmp_path, capsys):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    jpeg = open(selfies[0], "rb").read()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    code, _, err = run(capsys, "enroll", tmp_path / "dot.png", selfies[1], tmp_path / "cut.jpg",
                       bad_photos / "landscape.jpg", "--name", "bad")
    last = assert_clear_error(code, err, "dot.png: the photo is only 1x1 pixels", "cut.jpg: cannot read the image",
                              "landscape.jpg: no face found")
    assert selfies[1].name not in last  # the good photo is not blamed
    assert not home.profile_path("bad").exists()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_enroll_takes_a_16_bit_grey_photo_with_its_full_range(in_state, tmp_path, capsys):
    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257  # 16-bit, the full range
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    image = enroll.read_image(tmp_path / "grey16.png")
    assert image.shape == (512, 512, 3)
    np.testing.assert_array_equal(image[..., 0], grey // 257)  # not clipped to white
    code, _, err = run(capsys, "enroll", tmp_path / "grey16.png", "--name", "grey")
    assert code == 0, err
    home.remove_profile("grey")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_noise_is_not_enrolled_as_a_face(in_state, tmp_path, capsys):
    # BlazeFace scores this noise 0.69 in the whole image: below what the window search accepts
    noise = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    code, _, err = run(capsys, "enroll", tmp_path / "noise.png", "--name", "noise")
    assert_clear_error(code, err, "noise.png: no face found")
