"""`instantrestore video`: a file restored end to end, and what it refuses."""

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.cli import main
from instantrestore.runtime import Profile

from tests.support.commands import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE, assert_clear_error, face_regions, listing, run
from tests.support.media_helpers import (
    audio_packets,
    cut_off,
    flash_and_click_times,
    placed_face,
    read_frames,
    stream_info,
    stream_kinds,
    subtitle_cues,
    write_clip,
    write_flash_and_click,
    write_matroska,
    write_webcam_avi,
)
from tests.support.recognition import change, face_boxes, two_people


@pytest.mark.timeout(300)
def test_video_restores_only_the_people_named(two_person_home, tmp_path, monkeypatch, capsys):
    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    frames = [two_people() for _ in range(8)]
    clip = write_clip(tmp_path / "two.mp4", frames, fps=25)
    decoded = read_frames(clip)
    astronaut_box, hopper_box = face_boxes(decoded[0])
    assert main(["video", str(clip), "-o", str(tmp_path / "one.mp4"), "--profile", "eileen", "--backend", "torch"]) == 0
    said = capsys.readouterr().err.strip().splitlines()[-1]  # the end-of-run account of faces
    assert said.startswith("[instantrestore] faces: 8 restored; left as they were: ") and "7 not enrolled" in said, said
    assert main(["video", str(clip), "-o", str(tmp_path / "both.mp4"), "--profile", "eileen", "--profile", "grace",
                 "--backend", "torch"]) == 0
    one, both = read_frames(tmp_path / "one.mp4"), read_frames(tmp_path / "both.mp4")
    if (shots := __import__("os").environ.get("INSTANTRESTORE_TEST_SHOTS")):
        Image.fromarray(np.concatenate([decoded[4], one[4], both[4]])).save(Path(shots) / "two_people.png")
    for index in range(2, len(decoded)):  # the miniature's random restorer changes a restored face visibly
        assert change(one[index], decoded[index], astronaut_box) > 15
        assert change(one[index], decoded[index], hopper_box) < 4  # encoding noise only (encoded twice)
        assert change(both[index], decoded[index], astronaut_box) > 15
        assert change(both[index], decoded[index], hopper_box) > 15


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------------------------------------ video


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_says_an_hdr_clip_comes_out_sdr(in_state, tmp_path, capsys):
    frames = [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]] * 3
    hdr = write_clip(tmp_path / "hdr.mp4", frames, fps=CLIP_FPS, hlg=True)
    plain = write_clip(tmp_path / "plain.mp4", frames, fps=CLIP_FPS)
    for clip, warned in ((hdr, True), (plain, False)):
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / f"out-{clip.name}", "--profile", "me",
                           "--backend", "torch")
        assert code == 0, err
        assert ("hdr.mp4 is HDR (PQ/HLG); the restored copy is 8-bit SDR" in err) == warned


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_never_turns_a_fifo_into_a_file(in_state, short_clip, tmp_path, capsys):
    import stat

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, "video", short_clip, "-o", fifo, "--profile", "me", "--backend", "torch", *extra)
        assert_clear_error(code, err, str(fifo), "not a regular file")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert listing(tmp_path) == {"pipe.mp4"}


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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
    # (x264's threads may round a macroblock differently under load: a full-suite run once saw one block off by 22)
    assert diff[:, inner].mean() < 0.1 and np.percentile(diff, 99.9) <= 4


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


# ------------------------------------------------------------------ recordings as cameras and phones write them


def face_frames_of(count, size=CLIP_SIZE):
    return [placed_face(size, 0.45, (60.0 + 2 * i, 10.0 + i))[0] for i in range(count)]


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_restores_a_webcam_avi_whole(in_state, tmp_path, capsys):
    """MJPEG + PCM, as webcams and dashcams record: every frame used to be restored, then the MP4 writer refused
    the PCM (no channel layout) and the error named an internal temp file."""
    clip = write_webcam_avi(tmp_path / "cam.avi", face_frames_of(6))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(capsys, "video", clip, "-o", out_dir / "cam.mp4", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert "6/6 frames" in err and "face restored in 6 of 6" in err and "Traceback" not in err
    assert "note: cam.avi's pixels are yuvj420p (8-bit 4:2:0, full range); the restored copy's are yuv420p" in err
    assert listing(out_dir) == {"cam.mp4"} and stream_info(out_dir / "cam.mp4")["frames"] == 6
    assert [packet for packet, _, _ in audio_packets(out_dir / "cam.mp4")] == [
        packet for packet, _, _ in audio_packets(clip)]  # the sound, bit for bit


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_refuses_a_sound_track_its_output_cannot_hold_before_any_work(in_state, tmp_path, capsys):
    clip = write_webcam_avi(tmp_path / "cheap.avi", face_frames_of(3), channels=1, sample_format="u8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "video", clip, "-o", out_dir / "cheap.mp4", "--profile", "me", "--backend", "torch")
    assert_clear_error(code, err, "cheap.avi's audio stream #1 (pcm_u8) cannot be written into a .mp4 file",
                       "write a .mkv")
    assert "restoring" not in err and listing(out_dir) == set()  # said before the model loaded, nothing written
    code, _, err = run(capsys, "video", clip, "-o", out_dir / "cheap.mkv", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert stream_info(out_dir / "cheap.mkv")["frames"] == 3


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name, codec, sound", [("talk.mkv", "libx264", "aac"), ("talk.webm", "libvpx-vp9", "opus")])
def test_video_refuses_a_cut_off_matroska_or_webm_before_any_work(in_state, tmp_path, capsys, name, codec, sound):
    """An interrupted recording or a partial download used to come out shorter, exit 0, without a word."""
    whole = write_matroska(tmp_path / name, face_frames_of(CLIP_FRAMES), fps=CLIP_FPS, codec=codec, sound=sound)
    cut = cut_off(whole, tmp_path / f"cut-{name}", 0.85)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "video", cut, "-o", out_dir / "x.mp4", "--profile", "me", "--backend", "torch")
    assert_clear_error(code, err, f"cut-{name} is truncated: it holds ", f"of the {CLIP_FRAMES / CLIP_FPS:.2f} s it "
                       "declares", "frames, missing at the end")
    assert "restoring" not in err and listing(out_dir) == set()
    code, _, err = run(capsys, "video", whole, "-o", out_dir / "whole.mp4", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert stream_info(out_dir / "whole.mp4")["frames"] == CLIP_FRAMES and f"{CLIP_FRAMES}/{CLIP_FRAMES} frames" in err


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_keeps_subtitles_and_says_what_it_leaves_out(in_state, tmp_path, capsys):
    """A 10-bit MKV with SubRip subtitles and a sound track that holds nothing, as some recorders leave it."""
    cues = [(0.125, 0.25, "Hello there"), (0.25, 0.5, "Second line")]
    clip = write_matroska(tmp_path / "film.mkv", face_frames_of(CLIP_FRAMES), fps=CLIP_FPS, pix_fmt="yuv420p10le",
                          sound="empty", subtitles=cues)
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "film.mp4", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert ("note: film.mkv's audio stream #1 (aac) is empty (no sound in it); the restored copy has no such "
            "track") in err
    assert ("note: film.mkv's pixels are yuv420p10le (10-bit 4:2:0); the restored copy's are yuv420p "
            "(8-bit 4:2:0)") in err
    assert subtitle_cues(tmp_path / "film.mp4") == ("mov_text", cues)  # as MP4's own text track
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "film.avi", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert "note: film.mkv's subtitle stream #2 (srt) cannot go into a .avi file; it is left out" in err
    assert stream_kinds(tmp_path / "film.avi") == [("video", "h264")]


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_video_names_a_fifo_or_a_device_given_as_its_input(in_state, tmp_path, capsys):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # never opened: that would wait for a writer
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for path, said in ((fifo, "is a FIFO (named pipe), not a video file"),
                       ("/dev/zero", "is a device, not a video file")):
        code, _, err = run(capsys, "video", path, "-o", out_dir / "x.mp4", "--profile", "me", "--backend", "torch")
        assert_clear_error(code, err, f"{path} {said}")
        assert listing(out_dir) == set()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("audio_lead_s", [0.0, 0.25])
def test_video_keeps_a_click_and_a_flash_together(in_state, tmp_path, capsys, audio_lead_s):
    """Issue 23: lips and voice stay together in a recording. A clapperboard: a white frame and a click at its
    time, in a clip whose sound starts with its picture, and in one whose sound starts 0.25 s before it."""
    clip = write_flash_and_click(tmp_path / "clap.mp4", face_frames_of(CLIP_FRAMES), fps=CLIP_FPS, flash=6,
                                 audio_lead_s=audio_lead_s)
    flash_in, click_in = flash_and_click_times(clip)
    assert abs(click_in - flash_in) < 0.005  # the clip is what it says
    out_path = tmp_path / "clap.restored.mp4"
    code, _, err = run(capsys, "video", clip, "-o", out_path, "--profile", "me", "--backend", "torch")
    assert code == 0, err
    flash, click = flash_and_click_times(out_path)
    assert abs(click - flash) <= 1 / CLIP_FPS  # within one frame, decoded from the output as a player would
    assert flash == pytest.approx(flash_in, abs=1e-3) and click == pytest.approx(click_in, abs=1e-3)
