"""Sound in sync: the delayed microphone, with real audio through a real (private) PulseAudio daemon."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instantrestore.plugin import audio_sync
from instantrestore.plugin.audio_sync import MICROPHONE_NAME, AudioSyncUnavailable, DelayedMicrophone, DelayFollower

from tests.support.sound_server import FAKE_MIC, loaded_modules, measured_delay_ms, sound_server  # noqa: F401

REPOSITORY = Path(__file__).parents[2]


def ours(env) -> list:
    return [(name, arguments) for name, arguments in loaded_modules(env)
            if audio_sync.SINK_NAME in arguments or audio_sync.SOURCE_NAME in arguments]


def wait_for(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.timeout(120)
def test_the_microphone_plays_the_real_one_late_by_the_delay(sound_server):
    before = loaded_modules(sound_server)
    with DelayedMicrophone(FAKE_MIC).start(0.120) as microphone:
        assert microphone.source == FAKE_MIC and microphone.left_over == 0
        sources = subprocess.run(["pactl", "list", "sources"], capture_output=True, text=True).stdout
        assert f"Description: {MICROPHONE_NAME}" in sources  # what call apps list
        delay = measured_delay_ms(audio_sync.SOURCE_NAME, sound_server)
        assert delay == pytest.approx(120, abs=15)
    assert loaded_modules(sound_server) == before  # the sound server as it was


@pytest.mark.timeout(180)
def test_the_delay_follows_the_picture_as_its_latency_changes(sound_server):
    latency = {"now": 0.120}
    said = []
    with DelayedMicrophone().start(0.120) as microphone:  # the server's default source: the fake microphone
        follower = DelayFollower(lambda: latency["now"], microphone, said.append, every_s=0.1).start()
        try:
            assert measured_delay_ms(audio_sync.SOURCE_NAME, sound_server) == pytest.approx(120, abs=15)
            latency["now"] = 0.125  # a drift under 10 ms: left alone (each re-set costs a cross-fade)
            time.sleep(1.5)
            assert microphone.delay_s == pytest.approx(0.120) and said == []
            latency["now"] = 0.260
            assert wait_for(lambda: abs(microphone.delay_s - 0.260) < 0.011), microphone.delay_s
            assert any(f"{MICROPHONE_NAME} delayed" in line for line in said)
        finally:
            follower.stop()
        assert [name for name, _ in ours(sound_server)].count("module-loopback") == 1  # the old one went
        assert measured_delay_ms(audio_sync.SOURCE_NAME, sound_server) == pytest.approx(
            microphone.delay_s * 1000, abs=15)
    assert ours(sound_server) == []


@pytest.mark.timeout(120)
def test_a_new_delay_is_cross_faded_in_without_a_gap(sound_server):
    """A steady tone through the microphone while its delay moves from 120 to 250 ms: its level never drops
    (unloading the old loopback as the new one loads would leave a silence as long as the new delay)."""
    import threading

    import numpy as np

    from tests.support.sound_server import FAKE_MIC_SINK, RATE, Recorder, play

    with DelayedMicrophone(FAKE_MIC).start(0.120) as microphone:
        recording = Recorder(audio_sync.SOURCE_NAME, sound_server)
        recording.wait_flowing()
        tone = 8000 * np.sin(2 * np.pi * 440 * np.arange(RATE * 5) / RATE)
        player = threading.Thread(target=play, args=(FAKE_MIC_SINK, tone, sound_server))
        player.start()
        time.sleep(1.5)
        assert microphone.set_delay(0.250)
        player.join()
        time.sleep(0.6)
        sound, _ = recording.stop()
    window = RATE // 50  # 20 ms
    level = np.sqrt(np.mean(sound[: len(sound) // window * window].reshape(-1, window) ** 2, axis=1))
    playing = np.nonzero(level > 1000)[0]
    steady = level[playing[0] + 5: playing[-1] - 5]  # the tone, less its first and last 100 ms
    assert len(steady) * window > 4 * RATE  # one stretch: no silence split it
    assert steady.min() > 0.8 * np.median(steady), steady.min() / np.median(steady)
    # the server saved the faded-out stream's volume (module-stream-restore): the next start is still heard
    with DelayedMicrophone(FAKE_MIC).start(0.1):
        assert measured_delay_ms(audio_sync.SOURCE_NAME, sound_server) == pytest.approx(100, abs=15)


@pytest.mark.timeout(60)
def test_a_picture_later_than_a_second_is_said_once_and_the_delay_held_at_the_most(sound_server):
    said = []
    with DelayedMicrophone(FAKE_MIC).start(0.1) as microphone:
        follower = DelayFollower(lambda: 1.6, microphone, said.append)
        follower.smoothed = 1.6
        follower.step()
        follower.step()
        assert microphone.delay_s == audio_sync.MAX_DELAY_S
        assert sum("1.6 s late" in line for line in said) == 1
    assert ours(sound_server) == []


START = """
import sys, time
from instantrestore.plugin.audio_sync import DelayedMicrophone
microphone = DelayedMicrophone(sys.argv[1]).start(0.1)
print("left over", microphone.left_over, flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_what_a_killed_run_left_is_removed_by_the_next_start(sound_server):
    child = subprocess.Popen([sys.executable, "-c", START, FAKE_MIC], stdout=subprocess.PIPE, text=True,
                             cwd=REPOSITORY)
    try:
        assert child.stdout.readline().strip() == "left over 0"
        child.send_signal(signal.SIGKILL)  # no cleanup can run
        child.wait(timeout=30)
        assert len(ours(sound_server)) == 3  # sink, microphone, loopback: still loaded
        with DelayedMicrophone(FAKE_MIC).start(0.1) as microphone:
            assert microphone.left_over == 3
            assert sorted(name for name, _ in ours(sound_server)) == [
                "module-loopback", "module-null-sink", "module-remap-source"]
            assert measured_delay_ms(audio_sync.SOURCE_NAME, sound_server) == pytest.approx(100, abs=15)
        assert ours(sound_server) == []
    finally:
        if child.poll() is None:
            child.kill()


def test_a_source_that_does_not_exist_is_one_line_and_nothing_is_left(sound_server):
    before = loaded_modules(sound_server)
    with pytest.raises(AudioSyncUnavailable, match=r"no sound source 'alsa_input.nothing'; the microphones"):
        DelayedMicrophone("alsa_input.nothing").start(0.1)
    with pytest.raises(AudioSyncUnavailable, match="itself"):
        DelayedMicrophone(audio_sync.SOURCE_NAME).start(0.1)
    assert loaded_modules(sound_server) == before


def test_without_a_sound_server_it_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-server-here")
    monkeypatch.setenv("PULSE_RUNTIME_PATH", str(tmp_path))
    if audio_sync.shutil.which("pactl") is None:
        assert "pactl is not installed" in audio_sync.unavailable_reason()
    else:
        assert audio_sync.unavailable_reason().startswith("no sound server answers (pactl info failed:")
    with pytest.raises(AudioSyncUnavailable) as raised:
        DelayedMicrophone().start(0.1)
    assert "\n" not in str(raised.value)


def test_where_it_cannot_be_automatic_it_says_the_number_and_where(monkeypatch):
    said = []
    follower = DelayFollower(lambda: None, None, said.append)
    follower.smoothed = 0.1374
    follower.step(settled=True)
    assert said[0] == ("sound: the picture is 137 ms late; delay your microphone by 137 ms to keep lips and voice "
                       "together:")
    assert any("OBS" in line and "Sync Offset: 137 ms" in line for line in said)
    count = len(said)
    follower.smoothed = 0.145  # within 20 ms of what was said: not said again
    follower.step(settled=True)
    assert len(said) == count
    monkeypatch.setattr(audio_sync.platform, "system", lambda: "Windows")
    assert "needs PulseAudio or PipeWire (Linux); this is Windows" in audio_sync.unavailable_reason()


def test_doctor_says_whether_sound_sync_is_automatic_and_why_not(sound_server, monkeypatch, capsys):
    from instantrestore.plugin.commands import doctor

    out = "\n".join(doctor.report_lines(doctor.check_sound_sync()))
    assert "sound sync" in out and 'automatic: PulseAudio' in out and MICROPHONE_NAME in out
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/pulse/native")
    results = doctor.run_checks()
    (sync,) = [result for result in results if result.topic == "sound sync"]
    assert sync.status == doctor.WARN  # the camera runs without it
    assert sync.detail.startswith("not automatic: no sound server answers")
    assert "Sync Offset" in sync.next_step
