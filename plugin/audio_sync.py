"""Sound in sync (live): a virtual microphone that plays the real one late by the picture's measured latency.

On Linux, through the PulseAudio interface that both PulseAudio and PipeWire (pipewire-pulse) serve, driven by
`pactl`: a null sink takes the delayed sound, a remap source on its monitor is the microphone call apps list
("InstantRestore Microphone"), and a module-loopback from the real microphone into the null sink holds the
delay. The sound server does the timing (it measures its own buffers to hold the loopback's latency), so no
audio passes through this process and a busy GPU thread cannot make it crackle.

module-loopback's latency is fixed when it loads. To follow the picture, a new loopback is loaded silent
beside the old one and the two are cross-faded once the new one plays, then the old one is unloaded: no gap
and no click. Everything is tagged with the module names below, so a run that was killed leaves nothing the
next start does not remove.

Where it cannot be automatic (Windows, macOS, no sound server, OBS), manual_delay_lines() says the number to
type and where.
"""

from __future__ import annotations

import math
import platform
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Optional

from .errors import PluginError

MICROPHONE_NAME = "InstantRestore Microphone"
SINK_NAME = "instantrestore_delay"  # the null sink that carries the delayed sound (its monitor feeds the mic)
SOURCE_NAME = "instantrestore_mic"  # the microphone call apps list
MAX_DELAY_S = 1.0  # beyond this the call's sound would be too far behind for a conversation
RESET_AFTER_S = 0.010  # the loopback is re-set when the picture's latency drifts further than this
MIN_DELAY_S = 0.020  # module-loopback does not hold less than a few of its own blocks
INITIAL_DELAY_S = 0.050  # while the model loads the camera's own frames go out about a frame late
FADE_STEPS = 8  # each step is two pactl calls, a few ms each: the fade takes tens of ms
LOOPBACK_PROPERTY = "instantrestore.delay_ms"  # tags each loopback's sink input with its delay
PACTL_TIMEOUT_S = 10.0  # generous: the sound server answers in milliseconds, a loaded machine is slower


class AudioSyncUnavailable(PluginError):
    """Automatic sound sync cannot run here; the message says why (and the camera goes on without it)."""


def pactl(*args: str) -> str:
    """pactl's output; its failures as AudioSyncUnavailable, on one line."""
    try:
        done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except FileNotFoundError:
        raise AudioSyncUnavailable("pactl is not installed (Debian/Ubuntu: sudo apt install pulseaudio-utils; "
                                   "Fedora: sudo dnf install pulseaudio-utils)") from None
    except subprocess.TimeoutExpired:
        raise AudioSyncUnavailable(f"the sound server did not answer `pactl {args[0]}` within "
                                   f"{PACTL_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
        raise AudioSyncUnavailable(f"pactl {args[0]} failed: {reason}")
    return done.stdout


def unavailable_reason() -> Optional[str]:
    """None where the delayed microphone can be made here; else why not, on one line (for doctor and camera)."""
    system = platform.system()
    if system != "Linux":
        return f"automatic sound sync needs PulseAudio or PipeWire (Linux); this is {system or 'an unknown system'}"
    if shutil.which("pactl") is None:
        return "pactl is not installed (Debian/Ubuntu: sudo apt install pulseaudio-utils)"
    try:
        info = pactl("info")
    except AudioSyncUnavailable as error:
        return f"no sound server answers ({error})"
    if "Server Name:" not in info:
        return "the sound server did not say who it is (`pactl info`)"
    return None


def server_name() -> str:
    """"PulseAudio 16.1" or "PipeWire 1.0.5 (PulseAudio interface)", from `pactl info`."""
    info = pactl("info")
    name = re.search(r"^Server Name:\s*(.+)$", info, re.M)
    version = re.search(r"^Server Version:\s*(.+)$", info, re.M)
    text = name.group(1).strip() if name else "unknown sound server"
    if "PipeWire" in text:
        return text + " (PulseAudio interface)"
    return f"PulseAudio {version.group(1).strip()}" if version and text == "pulseaudio" else text


def our_modules() -> list:
    """[(index, name, arguments)] of the modules a delayed microphone loaded, this run's or a killed one's."""
    found = []
    for line in pactl("list", "short", "modules").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and (SINK_NAME in parts[2] or SOURCE_NAME in parts[2]):
            found.append((int(parts[0]), parts[1], parts[2]))
    return found


def remove_leftovers() -> int:
    """Unload what an earlier run left (it was killed); returns how many modules. Loopbacks first, then the
    microphone, then the sink, so nothing is moved onto another device on the way."""
    order = {"module-loopback": 0, "module-remap-source": 1, "module-null-sink": 2}
    leftovers = sorted(our_modules(), key=lambda module: order.get(module[1], 0))
    for index, _, _ in leftovers:
        _unload(index)
    return len(leftovers)


def _unload(index: int) -> None:
    try:
        pactl("unload-module", str(index))
    except AudioSyncUnavailable:
        pass  # gone already (a loopback unloads itself when its source disappears)


def source_names() -> list:
    return [line.split("\t")[1] for line in pactl("list", "short", "sources").splitlines() if "\t" in line]


def _properties(values: dict) -> str:
    """A property list as a module argument: 'device.description="A name" device.class="sound"'."""
    listed = " ".join(f'{key}="{value}"' for key, value in values.items())
    return f"'{listed}'"


class DelayedMicrophone:
    """The virtual microphone. start(delay_s) makes it, set_delay(delay_s) moves its delay, close() removes
    everything it made. source: the real microphone's source name (default: the server's default source)."""

    def __init__(self, source: Optional[str] = None):
        self.requested_source = source
        self.source: Optional[str] = None
        self.delay_s: Optional[float] = None
        self.left_over = 0  # modules an earlier, killed run left, removed at start
        self._modules: list = []  # sink and microphone, in load order
        self._loopback: Optional[int] = None
        self._lock = threading.Lock()

    def start(self, delay_s: float) -> "DelayedMicrophone":
        reason = unavailable_reason()
        if reason:
            raise AudioSyncUnavailable(reason)
        self.left_over = remove_leftovers()
        self.source = self._real_source()
        try:
            self._modules.append(int(pactl(
                "load-module", "module-null-sink", f"sink_name={SINK_NAME}", "rate=48000", "channels=1",
                "sink_properties=" + _properties({"device.description": "InstantRestore (feeds the microphone)"}))))
            self._modules.append(int(pactl(
                "load-module", "module-remap-source", f"source_name={SOURCE_NAME}", f"master={SINK_NAME}.monitor",
                "source_properties=" + _properties({
                    "device.description": MICROPHONE_NAME, "device.class": "sound",
                    "device.icon_name": "audio-input-microphone"}))))
            self._loopback = self._load_loopback(self._clamped(delay_s))
            self.delay_s = self._clamped(delay_s)
            self._full_volume(self._loopback)
        except BaseException:
            self.close()
            raise
        return self

    def _real_source(self) -> str:
        names = source_names()
        source = self.requested_source
        if source is None:
            found = re.search(r"^Default Source:\s*(\S+)", pactl("info"), re.M)  # get-default-source: PA 15+ only
            source = found.group(1) if found else "(none)"
            if source in (SOURCE_NAME, f"{SINK_NAME}.monitor"):
                raise AudioSyncUnavailable(f"the default microphone is {MICROPHONE_NAME} itself; pick your real "
                                           "one with --audio-source (`pactl list short sources` lists them)")
        elif source in (SOURCE_NAME, f"{SINK_NAME}.monitor"):
            raise AudioSyncUnavailable(f"--audio-source {source} is {MICROPHONE_NAME} itself; name your real "
                                       "microphone")
        if source not in names:
            real = [name for name in names if not name.endswith(".monitor") and name != SOURCE_NAME]
            raise AudioSyncUnavailable(f"no sound source {source!r}; the microphones here are: "
                                       f"{', '.join(real) or 'none'}")
        return source

    @staticmethod
    def _clamped(delay_s: float) -> float:
        return min(MAX_DELAY_S, max(MIN_DELAY_S, float(delay_s)))

    def _load_loopback(self, delay_s: float) -> int:
        return int(pactl("load-module", "module-loopback", f"source={self.source}", f"sink={SINK_NAME}",
                         f"latency_msec={round(delay_s * 1000)}", "source_dont_move=true", "sink_dont_move=true",
                         "sink_input_properties=" + _properties({
                             "media.name": "InstantRestore sound delay", LOOPBACK_PROPERTY: f"{delay_s * 1000:.0f}",
                             # its own key in the server's saved stream volumes, not every loopback's ("abstract")
                             "module-stream-restore.id": "instantrestore-sound-delay"})))

    def set_delay(self, delay_s: float) -> bool:
        """Move the delay to delay_s (clamped to MAX_DELAY_S) when it differs by more than RESET_AFTER_S;
        returns whether it moved. Takes about delay_s + a tenth of a second (the cross-fade)."""
        delay_s = self._clamped(delay_s)
        with self._lock:
            if self._loopback is None or abs(delay_s - self.delay_s) <= RESET_AFTER_S:
                return False
            old = self._loopback
            new = self._load_loopback(delay_s)
            self._loopback = new
            try:
                self._cross_fade(old, new, delay_s)
            finally:
                _unload(old)
            self.delay_s = delay_s
            self._full_volume(new)
            return True

    def _full_volume(self, loopback: int) -> None:
        """The loopback at full volume: the sound server may have given it the volume it saved for the stream
        last (the cross-fade's zero), and the last volume set is the one it saves."""
        sink_input = _loopback_inputs().get(loopback, _loopback_inputs().get(f"{self.delay_s * 1000:.0f}"))
        if sink_input is not None:
            pactl("set-sink-input-volume", str(sink_input), "1.0")  # a linear factor; "1" would be the raw 1/65536

    def _cross_fade(self, old: int, new: int, delay_s: float) -> None:
        """The new loopback plays silence until it holds delay_s of sound: muted from the start, faded in
        then, while the old one fades out. Both carry the same voice, a few ms apart: no gap, no click."""
        inputs = _loopback_inputs()
        new_input = inputs.get(new, inputs.get(f"{delay_s * 1000:.0f}"))
        old_input = inputs.get(old, inputs.get(f"{self.delay_s * 1000:.0f}"))
        if new_input is None or old_input is None:
            return
        pactl("set-sink-input-volume", str(new_input), "0.0")
        time.sleep(delay_s + 0.05)
        for step in range(1, FADE_STEPS + 1):  # equal power; linear factors (a % is on a cubic scale)
            angle = math.pi / 2 * step / FADE_STEPS
            pactl("set-sink-input-volume", str(new_input), f"{math.sin(angle):.3f}")
            pactl("set-sink-input-volume", str(old_input), f"{math.cos(angle):.3f}")

    def close(self) -> None:
        """Remove all this microphone made (also after a failed start); safe to call twice."""
        with self._lock:
            doomed = ([self._loopback] if self._loopback is not None else []) + self._modules[::-1]
            self._loopback, self._modules = None, []
        for index in doomed:
            _unload(index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _loopback_inputs() -> dict:
    """The loopbacks' sink inputs, from `pactl list sink-inputs`: {owner module index: sink input index} and
    {delay in ms as tagged: sink input index} (a server that does not say the owner module still keeps the tag)."""
    found, current = {}, None
    for line in pactl("list", "sink-inputs").splitlines():
        line = line.strip()
        if line.startswith("Sink Input #"):
            current = int(line.split("#", 1)[1])
        elif current is not None and line.startswith("Owner Module:"):
            owner = line.split(":", 1)[1].strip()
            if owner.isdigit():
                found[int(owner)] = current
        elif current is not None and line.startswith(f"{LOOPBACK_PROPERTY} = "):
            found[line.split("=", 1)[1].strip().strip('"')] = current
    return found


def manual_delay_lines(latency_ms: float) -> list:
    """Where to type the picture's latency by hand, per OS and tool (when sync cannot be automatic)."""
    ms = round(latency_ms)
    return [
        f"sound: the picture is {ms} ms late; delay your microphone by {ms} ms to keep lips and voice together:",
        f"  OBS: Edit > Advanced Audio Properties > your microphone's Sync Offset: {ms} ms",
        f"  Windows (VB-Audio VoiceMeeter, Equalizer APO): the input's Delay: {ms} ms, then pick the virtual "
        "output as the call's microphone",
        f"  macOS (BlackHole with Audio Hijack or Loopback): a Delay block of {ms} ms before the virtual device",
        f"  Linux: instantrestore camera --sync-audio does it for you (PulseAudio or PipeWire)",
    ]


class DelayFollower:
    """Keeps a DelayedMicrophone at the picture's latency (or, without one, says the number to type once it
    settles and again when it drifts; brief: in one line, for a user who did not ask for sound sync).
    latency_s() gives the latest measured latency, or None before any; it is smoothed (exponentially, over a
    few seconds) before it moves the delay."""

    def __init__(self, latency_s: Callable[[], Optional[float]], microphone: Optional[DelayedMicrophone],
                 progress: Callable[[str], None], every_s: float = 0.5, smoothing: float = 0.3, brief: bool = False):
        self.latency_s, self.microphone, self.progress, self.brief = latency_s, microphone, progress, brief
        self.every_s, self.smoothing = every_s, smoothing
        self.smoothed: Optional[float] = None
        self._said_ms: Optional[float] = None
        self._said_at = 0.0
        self._warned_too_late = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instantrestore-sound-sync", daemon=True)

    def start(self) -> "DelayFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=PACTL_TIMEOUT_S * 3)

    def _run(self) -> None:
        samples = 0
        while not self._stop.wait(self.every_s):
            latency = self.latency_s()
            if latency is None:
                continue
            samples += 1
            self.smoothed = latency if self.smoothed is None else (
                self.smoothed + self.smoothing * (latency - self.smoothed))
            try:
                self.step(settled=samples >= 4)
            except AudioSyncUnavailable as error:
                self.progress(f"sound sync stopped: {error}")
                return

    def step(self, settled: bool = True) -> None:
        """Act on the smoothed latency: move the microphone's delay, or say the number to type."""
        if self.smoothed is None:
            return
        if self.smoothed > MAX_DELAY_S and not self._warned_too_late:
            self._warned_too_late = True
            self.progress(f"sound: the picture is {self.smoothed:.1f} s late, more than the {MAX_DELAY_S:.0f} s "
                          "the microphone is delayed at most; the sound stays that far ahead")
        if self.microphone is not None:
            if self.microphone.set_delay(self.smoothed):
                self.progress(f"sound: {MICROPHONE_NAME} delayed {self.microphone.delay_s * 1000:.0f} ms")
            return
        ms = self.smoothed * 1000
        drifted = self._said_ms is None or abs(ms - self._said_ms) > 20
        if settled and drifted and time.monotonic() - self._said_at > 30:
            if self.brief:
                lines = [f"sound: the picture is {ms:.0f} ms late; delay your microphone as much to keep lips and "
                         f"voice together (OBS: its Sync Offset; on Linux --sync-audio does it for you)"]
            else:
                lines = manual_delay_lines(ms) if self._said_ms is None else manual_delay_lines(ms)[:1]
            for line in lines:
                self.progress(line)
            self._said_ms, self._said_at = ms, time.monotonic()
