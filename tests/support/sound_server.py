"""A private PulseAudio daemon for the sound-sync tests (null sinks only, no hardware), and a way to measure by how
much one source lags another with real audio through it.

The daemon lives in its own temporary runtime folder and socket, so it neither needs nor touches a desktop's
sound server; PULSE_SERVER points the tests' pactl, parec and pacat at it. "fakemic" is a null sink whose monitor
stands for the user's real microphone: what is played into it is what the microphone "hears".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

RATE = 48_000
FAKE_MIC_SINK = "fakemic"
FAKE_MIC = "fakemic.monitor"


def _pactl(env, *args, timeout=10.0):
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sound_server():
    """The daemon's environment (PULSE_SERVER set) while the tests of a module run; skips with the reason where
    PulseAudio is not installed or does not start."""
    for tool in ("pulseaudio", "pactl", "parec", "pacat"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install pulseaudio pulseaudio-utils)")
    runtime = Path(tempfile.mkdtemp(prefix="sound-server-"))
    os.chmod(runtime, 0o700)
    socket = runtime / "native"
    env = {**os.environ, "HOME": str(runtime), "XDG_RUNTIME_DIR": str(runtime),
           "PULSE_RUNTIME_PATH": str(runtime / "pulse"), "PULSE_STATE_PATH": str(runtime / "state")}
    env.pop("PULSE_SERVER", None)
    log = open(runtime / "daemon.log", "w")
    daemon = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
         "--disable-shm=yes", "--realtime=no", "--high-priority=no", "--log-target=stderr",
         "-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1",
         "-L", "module-stream-restore",  # as desktops load it: the server saves and restores stream volumes
         "-L", f"module-null-sink sink_name={FAKE_MIC_SINK} rate={RATE} channels=1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client_env = {**env, "PULSE_SERVER": f"unix:{socket}"}
    try:
        deadline = time.monotonic() + 30
        while _pactl(client_env, "info").returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (runtime / "daemon.log").read_text()[-400:]
                pytest.skip(f"a private PulseAudio daemon did not start: {' '.join(tail.split())}")
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            for name in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "XDG_RUNTIME_DIR"):
                patch.setenv(name, client_env[name])
            _pactl(client_env, "set-default-source", FAKE_MIC)
            yield client_env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)


def loaded_modules(env) -> list:
    """[(name, arguments)] of the modules the daemon has loaded now."""
    lines = _pactl(env, "list", "short", "modules").stdout.splitlines()
    return [tuple(line.split("\t")[1:3]) for line in lines if line.count("\t") >= 2]


class Recorder:
    """parec of one source into memory, with each chunk's arrival time: the recording's start on the monotonic
    clock is estimated from the earliest chunk (arrivals are late under load, never early), so two recordings
    started at different moments can be compared on one clock."""

    def __init__(self, source: str, env):
        self.process = subprocess.Popen(
            ["parec", "-d", source, "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "--latency-msec=5"],
            stdout=subprocess.PIPE, env=env, bufsize=0)
        self.chunks, self.arrivals = [], []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        received = 0
        while True:
            chunk = self.process.stdout.read(960)
            if not chunk:
                return
            self.chunks.append(chunk)
            received += len(chunk) // 2
            self.arrivals.append((time.monotonic(), received))

    def wait_flowing(self, seconds: float = 0.3, timeout_s: float = 20.0) -> None:
        """Until the source has delivered `seconds` of sound: a null sink that nothing listened to renders in
        blocks of up to two seconds, so a recording's first samples can take that long to come."""
        deadline = time.monotonic() + timeout_s
        while not (self.arrivals and self.arrivals[-1][1] >= seconds * RATE):
            assert time.monotonic() < deadline, "the sound server delivered no sound to a recording"
            time.sleep(0.02)

    def stop(self):
        """(samples as float, start time of the first sample on the monotonic clock)."""
        self.process.terminate()
        self.process.wait(timeout=10)
        self.thread.join(timeout=10)
        samples = np.frombuffer(b"".join(self.chunks)[: sum(map(len, self.chunks)) // 2 * 2], "<i2").astype(float)
        times = np.array(self.arrivals)
        return samples, float(np.min(times[:, 0] - times[:, 1] / RATE))


def click(seconds: float = 0.6, at: float = 0.1, seed: int = 0) -> np.ndarray:
    """Silence with a 10 ms burst of noise (a click with a sharp cross-correlation peak) at `at` seconds."""
    signal_ = np.zeros(int(RATE * seconds))
    start = int(RATE * at)
    signal_[start: start + RATE // 100] = np.random.default_rng(seed).standard_normal(RATE // 100) * 8000
    return signal_


def play(sink: str, samples: np.ndarray, env) -> None:
    subprocess.run(["pacat", "-d", sink, "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1"],
                   input=np.clip(samples, -32768, 32767).astype("<i2").tobytes(), env=env, check=True, timeout=30)


def measured_delay_ms(delayed_source: str, env, listen_s: float = 1.5) -> float:
    """Play a click into the fake microphone; by how many ms it reaches delayed_source after it reached the
    fake microphone itself (both recorded at once; the lag found by cross-correlation)."""
    reference, delayed = Recorder(FAKE_MIC, env), Recorder(delayed_source, env)
    reference.wait_flowing()
    delayed.wait_flowing()
    play(FAKE_MIC_SINK, click(), env)
    time.sleep(listen_s)
    (ref, ref_start), (out, out_start) = reference.stop(), delayed.stop()
    assert np.abs(ref).max() > 4000, "the click did not reach the fake microphone"
    assert np.abs(out).max() > 4000, f"the click never reached {delayed_source}"
    size = 1 << int(np.ceil(np.log2(len(ref) + len(out))))
    correlation = np.fft.irfft(np.fft.rfft(out, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(correlation))
    lag = lag - size if lag > size // 2 else lag
    return 1000.0 * (lag / RATE + out_start - ref_start)
