"""`instantrestore camera`: a live source into a virtual camera."""

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from instantrestore.plugin.commands import camera as camera_command
from instantrestore.plugin import vcam
from instantrestore.plugin.cli import main
from instantrestore.plugin.errors import PluginError

from tests.support.commands import CLIP_FPS, CLIP_SIZE, assert_clear_error, face_regions, listing, run
from tests.support.media_helpers import FakeCamera, FakeVideoCapture, FaultyCamera, read_frames, write_clip
from tests.support.recognition import change, face_boxes, two_people
from tests.support.sound_server import loaded_modules, measured_delay_ms, sound_server  # noqa: F401

REPOSITORY = Path(__file__).parents[3]  # the child process imports tests.support from here


@pytest.mark.timeout(300)
def test_camera_restores_each_person_named_and_says_who(two_person_home, tmp_path, monkeypatch, capsys):
    import pyvirtualcam
    from tests.support.media_helpers import RecordingVirtualCamera

    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    clip = write_clip(tmp_path / "call.mp4", [two_people() for _ in range(12)], fps=25)
    decoded = read_frames(clip)
    astronaut_box, hopper_box = face_boxes(decoded[0])
    pyvirtualcam.register_backend("recording", RecordingVirtualCamera)
    RecordingVirtualCamera.instances.clear()
    try:
        for profiles, grace_changes in ((["eileen"], False), (["eileen", "grace"], True)):
            argv = ["camera", "--input", str(clip), "--vcam-backend", "recording", "--max-frames", "12",
                    "--backend", "torch"]
            for name in profiles:
                argv += ["--profile", name]
            assert main(argv) == 0
            err = capsys.readouterr().err
            assert "faces: " in err and " restored" in err
            sent = [f.reshape(240, 480, 3) for f in RecordingVirtualCamera.instances[-1].frames]
            assert len(sent) >= 6
            # a sent frame shows some input frame (live mode drops and repeats): compare with the closest. Live,
            # faces are recognised beside the frames: the first few may go out before their identity is back.
            for frame in sent[-3:]:
                original = min(decoded, key=lambda d: np.abs(frame.astype(int) - d)[:, :60].mean())
                assert change(frame, original, astronaut_box) > 15
                assert (change(frame, original, hopper_box) > 15) == grace_changes
    finally:
        pyvirtualcam.camera.BACKENDS.pop("recording", None)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_a_source_registered_by_a_test_is_what_camera_input_reaches(in_state, clip, recording_backend, monkeypatch,
                                                                    capsys):
    from instantrestore.runtime.media import MemorySource, register_source, registry

    monkeypatch.setattr(registry, "SOURCES", dict(registry.SOURCES))  # the registration ends with this test
    frames = read_frames(clip)
    asked = []

    def open_toy(spec, **options):
        asked.append((spec, options["size"], options["fps"]))
        return MemorySource(frames, fps=CLIP_FPS, total=40)

    register_source("toy", lambda spec: spec.startswith("toy:"), open_toy)
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", "toy:drift", "--vcam-backend", "recording",
                       "--max-frames", 6, "--backend", "torch")
    assert code == 0, err
    assert asked == [("toy:drift", (1280, 720), None)]  # what camera asks any source for
    (camera,) = recording_backend.instances
    assert (camera.width, camera.height) == CLIP_SIZE and len(camera.frames) >= 3
    sent = [frame.reshape(CLIP_SIZE[1], CLIP_SIZE[0], 3).astype(np.int16) for frame in camera.frames]
    outside, _ = face_regions(frames[0])
    for frame in sent:  # each is one of the toy's frames, face restored
        assert min(np.abs(frame - original.astype(np.int16))[outside].mean() for original in frames) < 2.0


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_preview_without_a_display_is_refused_before_anything_opens(in_state, clip, tmp_path):
    import subprocess

    # in a child process: OpenCV's Qt aborts the whole process when it finds no display
    script = (
        "import sys\n"
        "import pyvirtualcam\n"
        "from tests.support.media_helpers import RecordingVirtualCamera\n"
        "pyvirtualcam.register_backend('recording', RecordingVirtualCamera)\n"
        "from instantrestore.plugin.cli import main\n"
        "code = main(['camera', '--profile', 'me', '--input', sys.argv[1], '--vcam-backend', 'recording',\n"
        "             '--backend', 'torch', '--max-frames', '3', '--preview'])\n"
        "print('virtual cameras opened:', len(RecordingVirtualCamera.instances))\n"
        "sys.exit(code)\n"
    )
    env = {name: value for name, value in os.environ.items() if name not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-c", script, str(clip)], capture_output=True, text=True, timeout=300,
                          env={**env, "INSTANTRESTORE_HOME": str(in_state)}, cwd=REPOSITORY)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "virtual cameras opened: 0"
    assert done.stderr.strip().splitlines()[-1] == (
        "instantrestore: error: --preview: no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is "
        "set); run without --preview (the virtual camera needs no display)")


# ------------------------------------------------------------------------------------------------ sound in sync

SYNCED_CAMERA = """
import sys
import pyvirtualcam
from tests.support.media_helpers import RecordingVirtualCamera
pyvirtualcam.register_backend('recording', RecordingVirtualCamera)
from instantrestore.plugin.cli import main
sys.exit(main(['camera', '--profile', 'me', '--input', sys.argv[1], '--vcam-backend', 'recording',
               '--backend', 'torch', '--sync-audio', '--stats']))
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop, code", [("SIGTERM", 143), ("SIGINT", 0)])  # SIGINT: Ctrl+C, "stopped (user)"
def test_sync_audio_delays_the_microphone_by_the_pictures_latency_and_a_stop_removes_it(
        sound_server, in_state, tmp_path, stop, code):
    """The whole command, in a child process: the virtual microphone is there while the camera runs, its delay
    (measured with a click through the real sound server) is the picture latency the camera measured, and
    SIGTERM or Ctrl+C leaves the sound server as it was."""
    import signal
    import subprocess
    import threading
    import time

    from instantrestore.plugin import audio_sync
    from tests.support.media_helpers import placed_face

    before = loaded_modules(sound_server)
    # 30 s of a face that stays in view: every frame is restored, so the latency holds (a frame without a face
    # skips the model and goes out sooner)
    frames = [placed_face(CLIP_SIZE, 0.9, (10.0 + 0.5 * i, -30.0 + 0.25 * i))[0] for i in range(60)]
    clip = write_clip(tmp_path / "long.mp4", (frames + frames[::-1]) * 6, fps=CLIP_FPS)
    child = subprocess.Popen([sys.executable, "-c", SYNCED_CAMERA, str(clip)], stderr=subprocess.PIPE, text=True,
                             cwd=REPOSITORY, env={**os.environ, "INSTANTRESTORE_HOME": str(in_state)})
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(child.stderr), daemon=True)
    reader.start()

    def delays_said():
        return [float(line.split(" delayed ")[1].split()[0]) for line in list(lines)
                if f"sound: {audio_sync.MICROPHONE_NAME} delayed " in line]

    try:
        deadline = time.monotonic() + 200
        while not delays_said() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delays_said(), "".join(lines)
        assert any(f'pick "{audio_sync.MICROPHONE_NAME}" as the microphone' in line for line in lines)
        assert len([module for module in loaded_modules(sound_server) if module not in before]) == 3
        for _ in range(4):  # a click measured while the delay was being re-set is measured again
            said = delays_said()
            delay = measured_delay_ms(audio_sync.SOURCE_NAME, sound_server)
            if delays_said() == said:
                break
        assert delay == pytest.approx(said[-1], abs=15), (delay, said)
        # the delay the microphone was given is the picture's latency, as the stats line measured it (over a
        # longer window: the microphone follows the last seconds)
        latencies = [float(line.split("| latency ")[1].split()[0]) for line in list(lines) if "| latency " in line]
        assert latencies and said[-1] == pytest.approx(latencies[-1], abs=max(15, 0.4 * latencies[-1]))
        assert child.poll() is None, "".join(lines)
        child.send_signal(getattr(signal, stop))
        assert child.wait(timeout=60) == code, "".join(lines)
    finally:
        if child.poll() is None:
            child.kill()
    reader.join(timeout=10)
    assert "Traceback" not in "".join(lines)
    assert loaded_modules(sound_server) == before


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_sync_audio_that_cannot_run_is_one_line_and_the_camera_goes_on(sound_server, in_state, clip,
                                                                       recording_backend, capsys, monkeypatch):
    before = loaded_modules(sound_server)
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "recording",
                       "--max-frames", 6, "--backend", "torch", "--audio-source", "alsa_input.nothing")
    assert code == 0, err
    assert "sound sync: no sound source 'alsa_input.nothing'; the microphones here are: " in err
    assert "the camera goes on without it" in err and "Traceback" not in err
    assert len(recording_backend.instances[-1].frames) >= 3
    assert loaded_modules(sound_server) == before
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/pulse/native")
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "recording",
                       "--max-frames", 6, "--backend", "torch", "--sync-audio")
    assert code == 0, err
    assert "sound sync: no sound server answers (pactl info failed: " in err
    assert len([line for line in err.splitlines() if "sound sync" in line]) == 1
