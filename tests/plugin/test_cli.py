"""The plugin's commands end to end through `instantrestore.plugin.cli.main` on the miniature model:
enroll from astronaut selfies, restore a clip with audio, run the camera from a file into a recording
virtual camera; and every mistake a user can make gets one clear line, exit code 2, nothing written."""

import hashlib
import os
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvirtualcam
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from media_helpers import (  # noqa: E402
    BrokenVirtualCamera,
    FakeCamera,
    FakeVideoCapture,
    FaultyCamera,
    RecordingVirtualCamera,
    astronaut,
    audio_packets,
    no_face_image,
    placed_face,
    read_frames,
    stream_info,
    write_clip,
    write_frameless_clip,
)

from instantrestore.plugin import camera as camera_command  # noqa: E402
from instantrestore.plugin import engine, enroll, home, vcam, video  # noqa: E402
from instantrestore.runtime import align  # noqa: E402
from instantrestore.plugin.errors import PluginError  # noqa: E402
from instantrestore.plugin.cli import main  # noqa: E402
from instantrestore.runtime import Profile  # noqa: E402
from instantrestore.runtime.backends import Choice  # noqa: E402

# MediaPipe runs in most of these: never let a hang stall the suite.
pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]

CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 12, 24, (320, 240)


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def listing(folder) -> set:
    """Every file under folder (temp files included), to prove a failed command wrote nothing."""
    return {os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names}


def run(capsys, *argv):
    """(exit code, stdout, stderr) of one command."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def face_regions(frame):
    """Boolean masks of a frame: well away from the clip's (drifting) face, and the middle of the face."""
    from instantrestore.runtime.align import face_crops

    x0, y0, x1, y1 = (int(round(v)) for v in face_crops(frame, 128)[0].box)
    size = x1 - x0
    outside = np.ones(frame.shape[:2], bool)
    drift = 2 * CLIP_FRAMES  # the face moves 2 px right and 1 px down per frame
    outside[max(0, y0 - size): y1 + size + drift, max(0, x0 - size): x1 + size + drift] = False
    inner = np.zeros(frame.shape[:2], bool)
    inner[y0 + size // 4: y1 - size // 4, x0 + size // 4: x1 - size // 4] = True
    return outside, inner


def assert_clear_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("instantrestore: error: "), err
    for fragment in fragments:
        assert fragment in last, last
    return last


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


# ------------------------------------------------------------------------------------------------ state


def test_state_lives_under_instantrestore_home(fresh_home, tiny_bundle):
    assert home.state_dir() == fresh_home.resolve()
    assert home.last_bundle_dir() is None
    home.remember_bundle(tiny_bundle)
    assert home.last_bundle_dir() == tiny_bundle.resolve()
    assert home.resolve_bundle().bundle_id == home.resolve_bundle(tiny_bundle).bundle_id


# ------------------------------------------------------------------------------------------------ enroll


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


@pytest.mark.parametrize("canvas, scale", [((2000, 1500), 1.0), ((1200, 900), 0.8)])
def test_a_face_small_in_a_large_photo_is_found(canvas, scale):
    from instantrestore.runtime.tracking import FaceDetector

    photo, _ = placed_face(canvas, scale, (0.3 * canvas[0], 0.2 * canvas[1]))
    with FaceDetector(mode="image", timeout_s=60.0) as detector:
        faces = align.find_faces(photo, 128, detector)
        assert len(faces) == 1 and faces[0].face_size == pytest.approx(102 * scale, rel=0.15)
        assert align.find_faces(np.ascontiguousarray(cv2.resize(no_face_image(), canvas)), 128, detector) == []


def test_enroll_lists_every_bad_photo_in_one_line(in_state, bad_photos, capsys):
    photos = [bad_photos / name for name in ("notes.jpg", "landscape.jpg", "two_people.jpg")]
    code, _, err = run(capsys, "enroll", *photos, "--name", "bad")
    last = assert_clear_error(code, err, "notes.jpg", "landscape.jpg", "two_people.jpg")
    assert last.index("notes.jpg") < last.index("landscape.jpg") < last.index("two_people.jpg")


def test_enroll_refuses_bad_names_and_missing_bundle(fresh_home, selfies, capsys):
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "../escape")
    assert_clear_error(code, err, "bad profile name")
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me")  # fresh home: no bundle recorded
    assert_clear_error(code, err, "no model bundle yet", "instantrestore export")
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me", "--bundle", fresh_home / "nowhere")
    assert_clear_error(code, err, "does not exist")
    assert not fresh_home.exists() or listing(fresh_home) == set()


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


def test_enroll_takes_a_16_bit_grey_photo_with_its_full_range(in_state, tmp_path, capsys):
    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257  # 16-bit, the full range
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    image = enroll.read_image(tmp_path / "grey16.png")
    assert image.shape == (512, 512, 3)
    np.testing.assert_array_equal(image[..., 0], grey // 257)  # not clipped to white
    code, _, err = run(capsys, "enroll", tmp_path / "grey16.png", "--name", "grey")
    assert code == 0, err
    home.remove_profile("grey")


def test_noise_is_not_enrolled_as_a_face(in_state, tmp_path, capsys):
    # BlazeFace scores this noise 0.69 in the whole image: below what the window search accepts
    noise = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    code, _, err = run(capsys, "enroll", tmp_path / "noise.png", "--name", "noise")
    assert_clear_error(code, err, "noise.png: no face found")


def test_what_can_fail_is_reported_before_the_model_loads(in_state, tiny_release, selfies, recording_backend,
                                                            tmp_path, monkeypatch, capsys):
    loads = []
    for command in (enroll, video, camera_command):
        monkeypatch.setattr(command, "load_engine", lambda *args, **kwargs: loads.append(args))
    frameless = write_frameless_clip(tmp_path / "frameless.mkv")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "video", frameless, "-o", out_dir / "x.mp4", "--profile", "me")
    assert_clear_error(code, err, "frameless.mkv: the video has no frames")
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", frameless, "--vcam-backend", "recording")
    assert_clear_error(code, err, "frameless.mkv: the video has no frames")
    assert listing(out_dir) == set() and not recording_backend.instances

    # a state folder that cannot be created: said before the photos are searched and the model loads
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "a-file" / "state"))
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me", "--bundle", tiny_release["bundle"])
    assert_clear_error(code, err, "cannot be created", "a-file is a file")
    assert "face of" not in err and not loads

    # a corrupt settings file: said before the checkpoint is imported
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.json").write_text('{"bundle": ')
    code, _, err = run(capsys, "export", "--checkpoint", tiny_release["checkpoint"], "--base", tiny_release["base"],
                       "--vae", tiny_release["vae"], "--out", tmp_path / "bundle", "--dtype", "float32")
    assert_clear_error(code, err, "settings.json is unreadable")
    assert not (tmp_path / "bundle").exists()


# ------------------------------------------------------------------------------------------------ video


def test_video_restores_the_face_and_keeps_frames_rate_duration_audio(in_state, clip, tmp_path, capsys):
    before = sha256(clip)
    out_path = tmp_path / "talk.restored.mp4"
    code, out, err = run(capsys, "video", clip, "-o", out_path, "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert out.strip() == str(out_path)
    assert f"{CLIP_FRAMES}/{CLIP_FRAMES} frames" in err and "Traceback" not in err
    assert sha256(clip) == before  # the input is never written to
    assert listing(tmp_path) == {"talk.restored.mp4"}  # no temp file left beside it

    source, result = stream_info(clip), stream_info(out_path)
    assert result["frames"] == source["frames"] == CLIP_FRAMES
    assert result["fps"] == source["fps"]
    assert result["duration"] == pytest.approx(source["duration"], abs=1.0 / CLIP_FPS)
    assert audio_packets(out_path) == audio_packets(clip)  # copied, not re-encoded

    # only the face changed: compare against the decoded input where the face is and is not
    originals, restored = read_frames(clip), read_frames(out_path)
    outside, inner = face_regions(originals[0])
    diff = np.abs(np.stack(restored).astype(np.int16) - np.stack(originals).astype(np.int16))
    assert diff[:, outside].mean() < 2.0  # re-encoding noise only
    assert diff[0][inner].mean() > 5.0  # the (random miniature) restorer visibly replaced the face


def test_video_says_an_hdr_clip_comes_out_sdr(in_state, tmp_path, capsys):
    frames = [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]] * 3
    hdr = write_clip(tmp_path / "hdr.mp4", frames, fps=CLIP_FPS, hlg=True)
    plain = write_clip(tmp_path / "plain.mp4", frames, fps=CLIP_FPS)
    for clip, warned in ((hdr, True), (plain, False)):
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / f"out-{clip.name}", "--profile", "me",
                           "--backend", "torch")
        assert code == 0, err
        assert ("hdr.mp4 is HDR (PQ/HLG); the restored copy is 8-bit SDR" in err) == warned


def test_video_refuses_to_overwrite_its_input(in_state, clip, tmp_path, capsys):
    before = sha256(clip)
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    folder_before = listing(clip.parent)
    for target in (clip, link, clip.parent / "sub" / ".." / clip.name):
        code, _, err = run(capsys, "video", clip, "-o", target, "--profile", "me")
        assert_clear_error(code, err, "is the input video")
    assert sha256(clip) == before and listing(clip.parent) == folder_before


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """Three frames of the drifting face: enough for the tests about where the output goes."""
    folder = tmp_path_factory.mktemp("short-clip")
    frames = [placed_face(CLIP_SIZE, 0.45, (60.0 + 2 * i, 10.0 + i))[0] for i in range(3)]
    return write_clip(folder / "short.mp4", frames, fps=CLIP_FPS)


def test_video_replaces_an_existing_output_only_with_overwrite(in_state, short_clip, tmp_path, capsys):
    out_path = tmp_path / "out.mp4"
    out_path.write_bytes(b"my earlier render")
    code, out, err = run(capsys, "video", short_clip, "-o", out_path, "--profile", "me", "--backend", "torch")
    assert_clear_error(code, err, str(out_path), "exists", "--overwrite")
    assert out_path.read_bytes() == b"my earlier render" and listing(tmp_path) == {"out.mp4"}
    code, out, err = run(capsys, "video", short_clip, "-o", out_path, "--profile", "me", "--backend", "torch",
                         "--overwrite")
    assert code == 0, err
    assert stream_info(out_path)["frames"] == 3 and listing(tmp_path) == {"out.mp4"}


def test_video_never_turns_a_fifo_into_a_file(in_state, short_clip, tmp_path, capsys):
    import stat

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, "video", short_clip, "-o", fifo, "--profile", "me", "--backend", "torch", *extra)
        assert_clear_error(code, err, str(fifo), "not a regular file")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert listing(tmp_path) == {"pipe.mp4"}


def test_video_into_a_symlink_writes_its_target_and_keeps_the_link(in_state, short_clip, tmp_path, capsys):
    renders = tmp_path / "renders"
    renders.mkdir()
    (renders / "old.mp4").write_bytes(b"old render")
    link, dangling = tmp_path / "latest.mp4", tmp_path / "next.mp4"
    link.symlink_to(renders / "old.mp4")
    dangling.symlink_to(renders / "new.mp4")
    code, _, err = run(capsys, "video", short_clip, "-o", link, "--profile", "me", "--backend", "torch")
    assert_clear_error(code, err, "exists", "--overwrite")  # the link's target exists
    for target, extra in ((link, ["--overwrite"]), (dangling, [])):
        code, _, err = run(capsys, "video", short_clip, "-o", target, "--profile", "me", "--backend", "torch", *extra)
        assert code == 0, err
        assert target.is_symlink() and stream_info(target)["frames"] == 3
    assert listing(renders) == {"old.mp4", "new.mp4"}


def test_video_output_name_at_the_file_system_limit(in_state, short_clip, tmp_path, capsys):
    name = "a" * 251 + ".mp4"  # 255 bytes, the most ext4, tmpfs and NTFS take
    code, out, err = run(capsys, "video", short_clip, "-o", tmp_path / name, "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert listing(tmp_path) == {name} and stream_info(tmp_path / name)["frames"] == 3
    too_long = "b" * 252 + ".mp4"
    code, out, err = run(capsys, "video", short_clip, "-o", tmp_path / too_long, "--profile", "me",
                         "--backend", "torch")
    assert_clear_error(code, err, too_long, "File name too long")
    assert listing(tmp_path) == {name}


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_video_stopped_by_a_signal_leaves_nothing_behind(in_state, tmp_path, signame, code):
    """timeout, docker stop, systemd and a closed terminal stop a run the way Ctrl+C does."""
    import signal
    import subprocess

    frames = [placed_face(CLIP_SIZE, 0.45, (60.0 + i % 40, 10.0))[0] for i in range(240)]
    long_clip = write_clip(tmp_path / "long.mp4", frames, fps=CLIP_FPS)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [sys.executable, "-m", "instantrestore.plugin.cli", "video", str(long_clip), "-o",
               str(out_dir / "long.restored.mp4"), "--profile", "me", "--backend", "torch", "--device", "cpu"]
    env = {**os.environ, "INSTANTRESTORE_HOME": str(in_state), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in process.stderr:  # the progress line of the first written frame: mid-run, temp file open
            seen.append(line)
            if " 1/240 frames" in line:
                break
        assert listing(out_dir), "".join(seen)  # the hidden temp file exists now
        process.send_signal(getattr(signal, signame))
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert f"instantrestore: stopped by {signame}" in err and "Traceback" not in err
    assert listing(out_dir) == set()


def test_video_leaves_a_frame_unchanged_when_the_model_returns_nan(in_state, short_clip, tmp_path, monkeypatch,
                                                                  capsys):
    """Damage the file checks cannot see (an fp16 overflow, a bad engine): no flat face is pasted, and the
    summary says so instead of "face restored in 3 of 3"."""
    from instantrestore.runtime.restorer import Restorer

    monkeypatch.setattr(Restorer, "restore", lambda self, images, profile, noise=None: torch.full_like(images, float("nan")))
    out_path = tmp_path / "out.mp4"
    code, _, err = run(capsys, "video", short_clip, "-o", out_path, "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert "face restored in 0 of 3" in err
    assert "warning: the model's output was not finite (NaN or infinite) in 3 of 3 frames" in err
    # the frames as they were through the same encoder: the same pixels but for x264's threading noise
    from instantrestore.runtime.media import FileSink, FileSource

    source = FileSource(short_clip)
    with FileSink(tmp_path / "unchanged.mp4", like=source) as sink:
        for frame in source:
            sink.write(frame.image, frame.time)
    unchanged = np.stack(read_frames(tmp_path / "unchanged.mp4")).astype(np.int16)
    diff = np.abs(np.stack(read_frames(out_path)).astype(np.int16) - unchanged)
    _, inner = face_regions(unchanged[0].astype(np.uint8))
    assert diff[:, inner].mean() < 0.1 and diff.max() <= 4


def test_video_refuses_truncated_and_unreadable_inputs(in_state, clip, tmp_path, capsys):
    data = open(clip, "rb").read()
    cut = tmp_path / "cut.mp4"  # moov at the end: cannot even be opened
    cut.write_bytes(data[: len(data) // 2])
    frames = [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]] * CLIP_FRAMES
    streaming = write_clip(tmp_path / "stream.mp4", frames, fps=CLIP_FPS, faststart=True)
    cut_streaming = tmp_path / "cut_stream.mp4"  # opens, then runs out of frames mid-way
    cut_streaming.write_bytes(open(streaming, "rb").read()[: int(os.path.getsize(streaming) * 0.6)])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(5000))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for bad, fragment in ((cut, "cut.mp4"), (cut_streaming, "truncated"), (garbage, "garbage.mp4"),
                          (tmp_path / "none.mp4", "file not found")):
        code, _, err = run(capsys, "video", bad, "-o", out_dir / "x.mp4", "--profile", "me", "--backend", "torch")
        assert_clear_error(code, err, fragment)
        assert listing(out_dir) == set()  # nothing left behind, not even a temp file


def test_video_refuses_missing_profile_foreign_profile_and_missing_bundle(in_state, clip, tmp_path, capsys):
    out_path = tmp_path / "out.mp4"
    code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "nobody")
    assert_clear_error(code, err, "no profile named 'nobody'", "instantrestore enroll")
    # a profile enrolled with another bundle
    other = Profile.load(home.profile_path("me"))
    other.bundle_id = "0" * 64
    other.save(home.profile_path("other"))
    try:
        code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "other")
        assert_clear_error(code, err, "profile 'other'", "another model bundle", "enroll again")
    finally:
        home.profile_path("other").unlink()
    code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "me", "--bundle", tmp_path / "no-bundle")
    assert_clear_error(code, err, "no-bundle", "does not exist")
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "me", "--bundle", not_a_bundle)
    assert_clear_error(code, err, "not a model bundle")
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "no-folder" / "out.mp4", "--profile", "me")
    assert_clear_error(code, err, "does not exist")
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.notavideoformat", "--profile", "me")
    assert_clear_error(code, err, "out.notavideoformat")
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "me", "--device", "cuda")
        assert_clear_error(code, err, "no CUDA GPU")
    assert not out_path.exists() and listing(tmp_path) == set()


# ------------------------------------------------------------------------------------------------ camera


@pytest.fixture
def recording_backend():
    pyvirtualcam.register_backend("recording", RecordingVirtualCamera)
    pyvirtualcam.register_backend("broken", BrokenVirtualCamera)
    RecordingVirtualCamera.instances.clear()
    yield RecordingVirtualCamera
    pyvirtualcam.camera.BACKENDS.pop("recording", None)
    pyvirtualcam.camera.BACKENDS.pop("broken", None)


def test_camera_from_a_file_into_a_recording_virtual_camera(in_state, clip, recording_backend, capsys):
    code, out, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "recording",
                         "--max-frames", 10, "--backend", "torch", "--stats")
    assert code == 0, err
    assert "virtual camera: recording-virtual-camera (recording) 320x240" in err
    assert "stats: " in err and "Traceback" not in err
    (camera,) = recording_backend.instances
    assert camera.closed and (camera.width, camera.height) == CLIP_SIZE
    assert camera.fps == pytest.approx(CLIP_FPS)
    assert len(camera.frames) >= 3
    frames = [frame.reshape(CLIP_SIZE[1], CLIP_SIZE[0], 3) for frame in camera.frames]
    decoded = read_frames(clip)
    outside, inner = face_regions(decoded[0])
    originals = [frame.astype(np.int16) for frame in decoded]
    for frame in frames:
        frame = frame.astype(np.int16)
        # each sent frame is some input frame with only its face replaced
        best = min(range(len(originals)), key=lambda i: np.abs(frame - originals[i])[outside].mean())
        assert np.abs(frame - originals[best])[outside].mean() < 2.0
    changed = [min(np.abs(f.astype(np.int16) - o)[inner].mean() for o in originals) for f in frames]
    assert max(changed) > 5.0


def test_live_camera_shows_the_raw_feed_while_the_model_loads(in_state, clip, recording_backend, monkeypatch, capsys):
    frames = read_frames(clip)
    monkeypatch.setattr(camera_command, "open_input", lambda spec, size, fps: FakeCamera(frames * 20, fps=CLIP_FPS))
    real_load = camera_command.load_engine

    def slow_load(*args, **kwargs):
        import time

        time.sleep(0.5)  # a model that takes a while to load
        return real_load(*args, **kwargs)

    monkeypatch.setattr(camera_command, "load_engine", slow_load)
    code, _, err = run(capsys, "camera", "--profile", "me", "--vcam-backend", "recording", "--max-frames", 6,
                       "--backend", "torch")
    assert code == 0, err
    assert "shows your camera as it is until the model is loaded" in err
    (camera,) = recording_backend.instances
    first = camera.frames[0].reshape(CLIP_SIZE[1], CLIP_SIZE[0], 3)
    assert np.array_equal(first, frames[0])  # unrestored, straight from the camera
    assert len(camera.frames) > 6  # passthrough frames, then the restored run


def test_an_unplugged_camera_is_retried_and_the_call_goes_on(in_state, clip, recording_backend, monkeypatch, capsys):
    import threading

    frames = read_frames(clip)
    loaded = threading.Event()
    opened = []

    def open_input(spec, size, fps):  # unplugged once the model runs; two failed opens; then back
        opened.append(spec)
        if len(opened) == 1:
            return FaultyCamera(frames, fps=CLIP_FPS, fault="unplugged", fault_at=loaded, after=4)
        if len(opened) <= 3:
            raise PluginError("cannot open camera 0")
        return FaultyCamera(frames, fps=CLIP_FPS)

    real_load = camera_command.load_engine

    def load_engine(*args, **kwargs):
        engine = real_load(*args, **kwargs)
        loaded.set()
        return engine

    monkeypatch.setattr(camera_command, "open_input", open_input)
    monkeypatch.setattr(camera_command, "load_engine", load_engine)
    code, _, err = run(capsys, "camera", "--profile", "me", "--vcam-backend", "recording", "--max-frames", 20,
                       "--backend", "torch")
    assert code == 0, err
    assert "reading camera 0 failed (camera 0 stopped delivering frames); reopening it (for up to 30 s" in err
    assert "camera 0 is back after" in err and len(opened) == 4
    (camera,) = recording_backend.instances
    assert camera.closed and len(camera.frames) >= 20  # the run went on to its 20 frames


def test_webcam_by_index_through_opencv(in_state, clip, recording_backend, monkeypatch, capsys):
    frames = read_frames(clip)
    monkeypatch.setattr(FakeVideoCapture, "frames", frames * 20)
    monkeypatch.setattr(FakeVideoCapture, "period", 1.0 / CLIP_FPS)
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", "0", "--vcam-backend", "recording",
                       "--max-frames", 8, "--backend", "torch", "--fps", CLIP_FPS)
    assert code == 0, err
    (camera,) = recording_backend.instances
    assert camera.closed and (camera.width, camera.height) == CLIP_SIZE and len(camera.frames) >= 8
    asked = FakeVideoCapture.last.requests  # 720p asked for; this camera has only its own size
    assert (asked[cv2.CAP_PROP_FRAME_WIDTH], asked[cv2.CAP_PROP_FRAME_HEIGHT]) == (1280, 720)

    monkeypatch.setattr(FakeVideoCapture, "opened", False)  # busy in another app, or not there
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", "1", "--vcam-backend", "recording")
    assert_clear_error(code, err, "cannot open camera 1; check that it exists and no other app is using it")


def test_camera_without_a_virtual_camera_says_what_to_do(in_state, clip, recording_backend, capsys, tmp_path):
    before = listing(in_state)
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "broken")
    last = assert_clear_error(code, err, "no virtual camera", "/dev/video42 does not exist")
    if vcam.platform_name() == "linux":
        assert vcam.MODPROBE in err and "exclusive_caps=1" in err and "Zoom" in err and "Chrome" in err
        assert "v4l2loopback" in last
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "nope")
    assert_clear_error(code, err, "unknown virtual camera backend 'nope'")
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", tmp_path / "nothing.mp4")
    assert_clear_error(code, err, "no such camera index, device or video file")
    code, _, err = run(capsys, "camera", "--profile", "nobody", "--input", clip)
    assert_clear_error(code, err, "no profile named 'nobody'")
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--size", "big")
    assert_clear_error(code, err, "--size must look like 1280x720")
    assert listing(in_state) == before
    assert not recording_backend.instances


def test_a_4_3_camera_in_a_16_9_virtual_camera_keeps_its_shape(in_state, recording_backend, tmp_path, capsys):
    frame = np.full((240, 320, 3), 255, np.uint8)
    cv2.circle(frame, (160, 120), 60, (0, 0, 0), thickness=-1)
    clip = write_clip(tmp_path / "ball.mp4", [frame] * 4, fps=CLIP_FPS)
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--size", "640x360",
                       "--vcam-backend", "recording", "--backend", "torch")
    assert code == 0, err
    (camera,) = recording_backend.instances
    assert (camera.width, camera.height) == (640, 360)
    sent = camera.frames[-1].reshape(360, 640, 3)
    rows, columns = np.nonzero(sent.mean(axis=2) < 128)
    width, height = columns.max() - columns.min() + 1, rows.max() - rows.min() + 1
    assert width == pytest.approx(height, rel=0.04)  # still a circle, not an ellipse
    assert height == pytest.approx(120 * 360 / 180, rel=0.04)  # the whole circle, scaled by 2 (a 320x180 crop)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_preview_without_a_display_is_refused_before_anything_opens(in_state, clip, tmp_path):
    import subprocess

    # in a child process: OpenCV's Qt aborts the whole process when it finds no display
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import pyvirtualcam\n"
        "from media_helpers import RecordingVirtualCamera\n"
        "pyvirtualcam.register_backend('recording', RecordingVirtualCamera)\n"
        "from instantrestore.plugin.cli import main\n"
        "code = main(['camera', '--profile', 'me', '--input', sys.argv[2], '--vcam-backend', 'recording',\n"
        "             '--backend', 'torch', '--max-frames', '3', '--preview'])\n"
        "print('virtual cameras opened:', len(RecordingVirtualCamera.instances))\n"
        "sys.exit(code)\n"
    )
    env = {name: value for name, value in os.environ.items() if name not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__), str(clip)], capture_output=True,
                          text=True, timeout=300, env={**env, "INSTANTRESTORE_HOME": str(in_state)})
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "virtual cameras opened: 0"
    assert done.stderr.strip().splitlines()[-1] == (
        "instantrestore: error: --preview: no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is "
        "set); run without --preview (the virtual camera needs no display)")


def test_setup_instructions_per_os():
    linux = "\n".join(vcam.setup_instructions("linux"))
    assert 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="InstantRestore Camera"' in linux
    assert "Chrome" in linux and "Zoom" in linux
    for os_name in ("windows", "macos"):
        text = "\n".join(vcam.setup_instructions(os_name))
        assert "OBS" in text and "Start Virtual Camera" in text and "OBS Virtual Camera" in text
        assert "OBS" in vcam.missing_camera_summary(os_name)


def fake_sysfs(root, loopback_label="InstantRestore Camera", exclusive_caps="Y"):
    """/sys/class/video4linux with a webcam and a v4l2loopback device, and the module's parameters."""
    real = root / "devices" / "pci0000:00" / "video4linux" / "video0"
    virtual = root / "devices" / "virtual" / "video4linux" / "video10"
    for folder, name in ((real, "Integrated Camera"), (virtual, loopback_label)):
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
    classes = root / "class"
    classes.mkdir()
    (classes / "video0").symlink_to(real)
    (classes / "video10").symlink_to(virtual)
    module = root / "module" / "v4l2loopback"
    (module / "parameters").mkdir(parents=True)
    (module / "parameters" / "exclusive_caps").write_text(exclusive_caps + "\n")
    return classes, module


def test_linux_loopback_devices_are_found_in_sysfs(tmp_path):
    classes, _ = fake_sysfs(tmp_path)
    devices = vcam.linux_video_devices(classes)
    assert [(d.path, d.name, d.loopback) for d in devices] == [
        ("/dev/video0", "Integrated Camera", False), ("/dev/video10", "InstantRestore Camera", True)]


@pytest.mark.parametrize("setup", ["good", "chrome-cannot-see-it", "not-loaded"])
def test_doctor_checks_the_linux_virtual_camera_setup(tmp_path, monkeypatch, setup):
    from instantrestore.plugin import doctor

    classes, module = fake_sysfs(tmp_path, "Dummy video device" if setup != "good" else "InstantRestore Camera",
                                 "N" if setup != "good" else "Y")
    if setup == "not-loaded":
        module = tmp_path / "no-such-module"
    monkeypatch.setattr(vcam, "platform_name", lambda: "linux")
    monkeypatch.setattr(vcam, "SYS_V4L", classes)
    monkeypatch.setattr(vcam, "SYS_LOOPBACK", module)
    (cameras,) = doctor.check_cameras()
    assert cameras.status == "ok" and "/dev/video0 (Integrated Camera)" in cameras.detail
    assert "/dev/video10" not in cameras.detail  # the virtual camera is not offered as an input
    checks = doctor.check_virtual_camera()
    statuses = [check.status for check in checks]
    text = " | ".join(f"{check.detail} -> {check.next_step}" for check in checks)
    if setup == "good":
        assert statuses == ["ok"] and 'v4l2loopback: /dev/video10 "InstantRestore Camera"' in text
    elif setup == "chrome-cannot-see-it":
        assert statuses == ["ok", "warn", "warn"]
        assert "exclusive_caps is off: Chrome" in text and 'apps show "Dummy video device"' in text
        assert "sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback devices=1 exclusive_caps=1" in text
    else:
        assert statuses == ["missing"] and "no v4l2loopback device -> sudo modprobe v4l2loopback" in text


# ------------------------------------------------------------------------------------------------ doctor, export


def test_doctor_reports_each_part_with_next_steps(fresh_home, capsys):
    code, out, _ = run(capsys, "doctor")
    assert code == 1  # no bundle, no profile yet
    for topic in ("python", "packages", "gpu", "tensorrt", "onnxruntime", "face detector", "cameras",
                  "virtual camera", "state folder", "bundle", "profiles"):
        assert any(line.split("  ")[0].strip() in ("ok", "warn", "missing") and f" {topic} " in line
                   for line in out.splitlines()), topic
    assert "next: `instantrestore export` (fetches the authors' weights from the hub" in out
    assert "next: `instantrestore enroll" in out
    assert "to fix before the camera can run" in out.splitlines()[-1]


def test_doctor_with_bundle_and_profile(in_state, capsys):
    code, out, _ = run(capsys, "doctor")
    bundle_line = next(line for line in out.splitlines() if " bundle " in line)
    assert bundle_line.startswith("ok")
    assert any(line.startswith("ok") and "me: 4 photos" in line for line in out.splitlines())


def test_doctor_says_the_state_folder_is_yet_to_be_made_or_cannot_be(fresh_home, tmp_path, monkeypatch, capsys):
    code, out, _ = run(capsys, "doctor")
    (line,) = [line for line in out.splitlines() if " state folder " in line]
    assert line.startswith("ok") and f"{fresh_home} (not there yet; created on the first export or enroll)" in line
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "a-file" / "home"))
    code, out, _ = run(capsys, "doctor")
    (line,) = [line for line in out.splitlines() if " state folder " in line]
    assert line.startswith("missing") and "cannot be created" in line and code == 1


def test_version_and_a_description_and_examples_on_every_help_screen(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"instantrestore {importlib.metadata.version('instantrestore')}"
    from instantrestore.plugin.cli import build_parser

    (commands,) = [action for action in build_parser()._actions if action.dest == "command"]
    assert {"export", "bundles", "enroll", "profiles", "camera", "video", "batch", "doctor", "bench"} <= set(commands.choices)
    for command in commands.choices:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        usage, description = out.split("\n\n")[:2]
        assert usage.startswith(f"usage: instantrestore {command}")
        assert not description.startswith(("positional arguments", "options")) and len(description) > 40, command
        assert f"examples:\n  instantrestore {command}" in out, command


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


def test_tensorrt_asked_for_where_it_cannot_run_is_said_first(in_state, clip, recording_backend, tmp_path, capsys):
    from instantrestore.runtime.backends.tensorrt_backend import TensorRTUnavailableError, import_tensorrt, require_cuda

    try:
        import_tensorrt(), require_cuda()
        pytest.skip("TensorRT and a GPU are here")
    except TensorRTUnavailableError as error:
        reason = str(error)[:40]
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "recording",
                       "--backend", "tensorrt")
    assert_clear_error(code, err, reason)
    assert "building" not in err and not recording_backend.instances  # no build announced, no camera opened
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "tensorrt")
    assert_clear_error(code, err, reason)
    assert "building" not in err and listing(tmp_path) == set()


def test_rates_and_counts_read_as_people_write_them(in_state, recording_backend, tmp_path, capsys):
    ntsc = write_clip(tmp_path / "ntsc.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]], fps=Fraction(30000, 1001))
    code, _, err = run(capsys, "video", ntsc, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert "1 frame at 29.97 fps" in err
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", ntsc, "--vcam-backend", "recording",
                       "--backend", "torch")
    assert code == 0, err
    assert "playing ntsc.mp4 at 29.97 fps" in err and "320x240 at 29.97 fps" in err
    assert " 1 frames" not in err and "30 fps" not in err


def test_export_records_the_default_bundle(fresh_home, tiny_release, tmp_path, capsys):
    out_dir = tmp_path / "bundle"
    code, out, err = run(capsys, "export", "--checkpoint", tiny_release["checkpoint"], "--base", tiny_release["base"],
                         "--vae", tiny_release["vae"], "--out", out_dir, "--dtype", "float32")
    assert code == 0, err
    assert out.strip() == str(out_dir)
    assert home.last_bundle_dir() == out_dir.resolve()


def test_unexpected_errors_are_one_line_too(in_state, monkeypatch, capsys):
    def explode(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(video, "restore_video", explode)
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "instantrestore: internal error (RuntimeError): something broke (set INSTANTRESTORE_DEBUG=1 to see where; "
        "please report it)"]


@pytest.mark.parametrize("bug", [ValueError("bad index 7"), OSError("Bad file descriptor")])
def test_a_bare_value_or_os_error_is_a_bug_not_the_users_mistake(in_state, monkeypatch, capsys, bug):
    """Only InstantRestoreError (and its subclasses) is the user's to fix: exit 2 and its own words. Anything
    else, a builtin ValueError or OSError included, is our bug: exit 1, said to be one."""
    def explode(*args, **kwargs):
        raise bug

    monkeypatch.setattr(video, "restore_video", explode)
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (f"instantrestore: internal error ({type(bug).__name__}): {bug} (set INSTANTRESTORE_DEBUG=1 "
                           "to see where; please report it)")


def test_every_user_error_shares_one_root_and_exits_2(in_state, monkeypatch, capsys):
    from instantrestore.runtime.errors import InstantRestoreError
    from instantrestore.runtime.media import MediaError

    def refuse(*args, **kwargs):
        raise MediaError("talk.mp4: the video has no frames")

    monkeypatch.setattr(video, "restore_video", refuse)
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 2 and err.strip() == "instantrestore: error: talk.mp4: the video has no frames"
    assert issubclass(PluginError, InstantRestoreError) and issubclass(MediaError, InstantRestoreError)


def test_debug_shows_the_traceback_of_a_bug(in_state, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(video, "restore_video", explode)
    monkeypatch.setenv("INSTANTRESTORE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["video", "a.mp4", "-o", "b.mp4", "--profile", "me"])


class StopExport(ValueError):
    pass


def test_onnx_backend_exports_missing_graphs_first(in_state, clip, tmp_path, monkeypatch, capsys):
    """The glue only: the real export (minutes on this CPU) is covered by test_onnx.py."""
    import instantrestore.export.onnx_export as onnx_export

    calls = []

    def fake_export(bundle_dir, **options):
        calls.append((str(bundle_dir), options))
        raise StopExport("export stopped by the test")

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend",
                       "onnxruntime", "--device", "cpu")
    assert_clear_error(code, err, "export stopped by the test")
    assert "exporting them once" in err
    (bundle_dir, options), = calls
    assert bundle_dir == str(home.resolve_bundle().path)
    assert options["dtype"] == "fp32" and options["device"] == "cpu"
    assert listing(tmp_path) == set()
    calls.clear()
    code, _, err = run(capsys, "export", "--onnx", "--dtype", "float32")
    assert_clear_error(code, err, "export stopped by the test")
    (bundle_dir, options), = calls
    assert bundle_dir == str(home.resolve_bundle().path) and options["dtype"] == "float32"


def test_export_lists_what_it_built(in_state, monkeypatch, capsys):
    """The glue again (real exports: test_onnx.py, test_tensorrt.py): each built graph and engine is named."""
    import instantrestore.export.onnx_export as onnx_export
    import instantrestore.export.tensorrt_build as tensorrt_build

    bundle_dir = home.resolve_bundle().path
    monkeypatch.setattr(onnx_export, "export_onnx",
                        lambda bundle, **options: {g: Path(bundle) / f"{g}.onnx" for g in ("restorer", "enroller")})
    monkeypatch.setattr(tensorrt_build, "build_engines",
                        lambda bundle, **options: {g: Path(bundle) / f"{g}.plan" for g in ("restorer", "enroller")})
    code, out, err = run(capsys, "export", "--onnx", "--tensorrt", "--dtype", "float32")
    assert code == 0, err
    assert out.strip() == str(bundle_dir)
    for line in (f"onnx restorer: {bundle_dir / 'restorer.onnx'}", f"tensorrt enroller: {bundle_dir / 'enroller.plan'}"):
        assert line in err


def test_cpu_runs_give_the_model_all_cores_but_one_and_opencv_one(in_state, tmp_path, monkeypatch, capsys):
    from instantrestore.runtime.pipeline import FramePipeline

    seen = []
    restore_located = FramePipeline.restore_located

    def noting_threads(self, located):  # in the pipeline's restore stage, where the model runs
        seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return restore_located(self, located)

    monkeypatch.setattr(FramePipeline, "restore_located", noting_threads)
    monkeypatch.setattr(engine, "usable_cores", lambda: 3, raising=False)
    opencv_threads = cv2.getNumThreads()
    clip = write_clip(tmp_path / "one.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]], fps=CLIP_FPS)
    try:
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "torch",
                           "--device", "cpu")
        assert code == 0, err
        assert seen == [(2, 1)]
        # onnxruntime's sessions get the same share; a GPU run leaves the CPU settings alone
        assert engine.use_cpu_threads(Choice("onnxruntime", "cpu", torch.float32)) == {"threads": 2}
        assert engine.use_cpu_threads(Choice("torch", "cuda", torch.float16)) == {}
    finally:
        torch.set_num_threads(1)
        cv2.setNumThreads(opencv_threads)


def test_native_log_lines_are_kept_off_the_terminal(tmp_path):
    """MediaPipe/LiteRT and OpenCV log straight to fd 2; the CLI drops those lines and keeps the rest."""
    import subprocess

    script = (
        "import os, sys\n"
        "from instantrestore.plugin.quiet import filtered_native_stderr\n"
        "with filtered_native_stderr():\n"
        "    print('[instantrestore] progress', file=sys.stderr)\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'W0000 00:00:1795690829.106003    5846 inference_runner_litert.cc:1433] Input tensor\\n')\n"
        "    os.write(2, b'[ WARN:0@1.2] global cap_v4l.cpp:999 open VIDEOIO(V4L2:/dev/video9)\\n')\n"
        "    os.write(2, b'a real problem from a native library\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Python's own lines skip the filter's pipe (written before the native ones here, so they cannot interleave)
    assert done.stderr.splitlines() == ["[instantrestore] progress", "a real problem from a native library", "after"]
