"""`instantrestore camera`: the live virtual camera. The camera (or a video file played as one) goes in, the
restored frames go out to the virtual camera call apps pick, and the camera's own frames go out while the model
loads. Everything the user gave is checked before the slow model load."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import audio_sync, home, vcam
from ..arguments import add_model_options, add_profile_option, check_blend
from ..engine import choose_engine, load_engine
from ..errors import PluginError
from ..progress import TERMINAL, Progress, count_text, faces_line, rate_text, say
from . import Outcome

NAME = "camera"
SUMMARY = "live: your camera in, the restored face out as a virtual camera"
DESCRIPTION = ("Read your webcam (or a video file), restore your face in every frame and send the result to the "
               "virtual camera, to pick in Zoom, Meet, Teams or OBS. Ctrl+C stops.")
EXAMPLES = ("instantrestore camera --profile me",
            "instantrestore camera --profile me --input /dev/video2 --size 1280x720 --fps 30",
            "instantrestore camera --profile me --sync-audio")


@dataclasses.dataclass
class Options:
    """What `camera` was asked: whose faces to restore (one profile name or several); the input (a camera index,
    device path or video file; default camera 0); the model (bundle, backend, device); the output's size
    ("1280x720") and rate; the virtual camera's pyvirtualcam backend and device; when to stop; a preview window;
    the stats log; the strength of the restored face; whether to delay the microphone to match the picture
    (sync_audio; audio_source: the real microphone's sound-server name, default the system's default one; naming
    it asks for the sync)."""

    profile: str | list
    input: Optional[str] = None
    bundle: Optional[str] = None
    backend: str = "auto"
    device: Optional[str] = None
    size: Optional[str] = None
    fps: Optional[float] = None
    vcam_backend: Optional[str] = None
    vcam_device: Optional[str] = None
    max_frames: Optional[int] = None
    preview: bool = False
    show_stats: bool = False
    blend: float = 1.0
    sync_audio: bool = False
    audio_source: Optional[str] = None

    def __post_init__(self):
        self.frame_size = parse_size(self.size)  # (width, height) or None
        if self.fps is not None and not (1 <= self.fps <= 240):
            raise PluginError(f"--fps must be between 1 and 240, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise PluginError(f"--max-frames must be at least 1, got {self.max_frames}")
        self.blend = check_blend(self.blend)
        self.sync_audio = self.sync_audio or self.audio_source is not None


def add_arguments(parser) -> None:
    add_profile_option(parser)
    parser.add_argument("--input", help="camera index (default 0), device path (/dev/video0) or a video file "
                                        "(played at its own rate)")
    parser.add_argument("--size", help="virtual camera size WIDTHxHEIGHT, also asked of the camera (default: 1280x720 "
                                       "asked of a camera, which may deliver another size; a file's own size)")
    parser.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    parser.add_argument("--vcam-backend", help="pyvirtualcam backend: v4l2loopback (Linux), obs, unitycapture (Windows)")
    parser.add_argument("--vcam-device", help="virtual camera device, e.g. /dev/video10 (default: the first free one)")
    parser.add_argument("--max-frames", type=int, help="stop after this many captured frames")
    parser.add_argument("--preview", action="store_true", help="also show the output in a window (q or Esc stops)")
    parser.add_argument("--stats", dest="show_stats", action="store_true",
                        help="log per-stage timings every 2 s (and draw them on the preview)")
    parser.add_argument("--blend", type=float, help="strength of the restored face, 0..1 (default 1)")
    parser.add_argument("--sync-audio", action="store_true",
                        help="also make a virtual microphone, \"InstantRestore Microphone\", that plays your "
                             "microphone as late as the picture (Linux: PulseAudio or PipeWire); elsewhere, say the "
                             "delay to set")
    parser.add_argument("--audio-source", metavar="NAME",
                        help="the real microphone for --sync-audio, as `pactl list short sources` names it "
                             "(default: the system's default input; implies --sync-audio)")
    add_model_options(parser)


def parse_size(text) -> Optional[tuple]:
    if text is None:
        return None
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PluginError(f"--size must look like 1280x720, got {text!r}")
    width, height = int(parts[0]), int(parts[1])
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise PluginError(f"--size {width}x{height} is out of range")
    return width, height


DEFAULT_CAMERA_SIZE = (1280, 720)  # what call apps send; OpenCV alone would open most webcams at 640x480


def open_input(spec, size: Optional[tuple], fps: Optional[float]):
    """The source --input names (runtime.media.open_source): a camera (index or device path; asked for `size`,
    else 1280x720), a video file (played at its own rate), or any other registered source. Default: camera 0."""
    from instantrestore.runtime.media import CameraUnavailable, SourceNotFound, open_source

    try:
        return open_source("0" if spec is None else spec, size=size or DEFAULT_CAMERA_SIZE, fps=fps)
    except SourceNotFound as error:
        raise PluginError(f"--input {error}") from None
    except CameraUnavailable as error:
        raise PluginError(f"{error}; check that it exists and no other app is using it (`instantrestore doctor` "
                          "lists cameras)") from None


def _camera_device_path(source) -> Optional[str]:
    device = source.device
    if device is None:
        return None
    if isinstance(device, int) and vcam.platform_name() == "linux":
        return f"/dev/video{device}"
    return os.path.realpath(device) if isinstance(device, str) else None


class StatsLog:
    """A sink that writes no frame: it says the pipeline's stats line every `every_s` seconds (--stats)."""

    def __init__(self, stats, progress=say, every_s: float = 2.0):
        self.stats, self.progress, self.every_s = stats, progress, every_s
        self._last = time.monotonic()

    def write(self, image, timestamp=None):
        if time.monotonic() - self._last >= self.every_s:
            self.progress("stats: " + self.stats.format_line())
            self._last = time.monotonic()

    def close(self):
        pass

    abort = close


class LiveControl:
    """Another thread's handle on a running `run_camera` (the panel): stop it, change the strength or the profiles
    without a restart, see each shown frame through on_frame(raw, shown, latency_s)."""

    def __init__(self, on_frame=None):
        self.stop = threading.Event()
        self.on_frame = on_frame
        self.camera_name = None  # what call apps list, once the virtual camera is open
        self.pipeline = None  # once the model is loaded
        self.blend = None  # a strength set while the model loads, applied when it is live
        self._engine = self._bundle = None

    def set_blend(self, blend: float) -> None:
        self.blend = check_blend(blend)
        if self.pipeline is not None:
            self.pipeline.compositor.blend = self.blend  # read at every frame's paste

    def attach(self, pipeline, engine, bundle) -> None:
        """The camera is live: `pipeline` restores with `engine`; a strength set meanwhile applies now."""
        self._engine, self._bundle, self.pipeline = engine, bundle, pipeline
        if self.blend is not None:
            pipeline.compositor.blend = self.blend

    def set_profile(self, names) -> None:
        """Restore these people (one profile name or several) from the next frames on."""
        from instantrestore.runtime.frames.pipeline import identities_of

        if self.pipeline is None:
            raise PluginError("the model is still loading; change the profile when the camera is live")
        profiles = home.load_profiles(names, self._bundle)
        restorers = {name: self._engine.crop_restorer(profile) for name, profile in profiles.items()}
        identities = identities_of(profiles, live=True)
        previous = self.pipeline.identities
        self.pipeline.restore, self.pipeline.identities = restorers, identities  # tracks are recognised anew
        if previous is not None:
            previous.close()


def run(options: Options, progress: Progress = TERMINAL, control: Optional[LiveControl] = None) -> Outcome:
    """Live restore from a camera or a file into the virtual camera until Ctrl+C, the end of the file,
    `max_frames` captured frames, or control.stop; each enrolled person with their own profile. The Outcome's
    value: {"sent": frames sent, "report": the LiveReport (None when stopped by Ctrl+C), "stats": a summary}."""
    from instantrestore.runtime.media import FittedSink, display_problem

    if options.preview and (problem := display_problem()):
        raise PluginError(f"--preview: {problem}; run without --preview (the virtual camera needs no display)")
    bundle = home.resolve_bundle(options.bundle)
    profiles = home.load_profiles(options.profile, bundle)
    choose_engine(bundle, options.backend, options.device)  # a backend that cannot run here is said before anything opens
    with contextlib.ExitStack() as stack:
        source = open_camera_input(options, progress)
        stack.callback(source.close)
        out_size = options.frame_size or (source.width, source.height)
        out_fps = float(options.fps or source.fps or 30)
        camera_sink = open_virtual_camera(options, out_size, out_fps, progress)
        stack.callback(camera_sink.close)
        check_not_a_loop(source, camera_sink)
        shown_as = vcam.camera_name_in_apps(camera_sink.backend, camera_sink.device)
        if control is not None:
            control.camera_name = shown_as
        progress(f"virtual camera: {camera_sink.device} ({camera_sink.backend}) {out_size[0]}x{out_size[1]} at "
                 f"{rate_text(out_fps)} fps; pick \"{shown_as}\" in your call app. Ctrl+C stops.")
        microphone = open_delayed_microphone(options, progress)
        if microphone is not None:
            stack.callback(microphone.close)
        live = LiveCall(options, stack, control, progress)
        engine, restorers = live.load(bundle, profiles, source, FittedSink(camera_sink, out_size))
        pipeline = live.start(engine, bundle, profiles, restorers)
        output = live.output(camera_sink, out_size)
        follower = audio_sync.DelayFollower(pipeline.stats.recent_latency_s, microphone, progress,
                                            brief=not options.sync_audio).start()
        stack.callback(follower.stop)  # before the microphone closes (the stack unwinds last in, first out)
        report, stopped_by = live.run(source, output, out_fps)
        return Outcome(value=live.summary(report, stopped_by, camera_sink.frames_written))


def open_camera_input(options: Options, progress):
    """The input, opened; a live camera wrapped so that a hung or unplugged camera is reopened, not the end of the
    call's video."""
    from instantrestore.runtime.media import SteadyCamera

    spec, size, fps = options.input, options.frame_size, options.fps
    source = open_input(spec, size, fps)
    if source.live:
        return SteadyCamera(lambda: open_input(spec, size, fps), camera=source, notify=progress)
    progress(f"playing {Path(str(spec)).name} at {rate_text(source.fps)} fps as the camera")
    return source


def open_virtual_camera(options: Options, out_size: tuple, out_fps: float, progress):
    """The virtual camera sink, or PluginError with the setup steps for this system."""
    from instantrestore.runtime.media import VirtualCameraSink, VirtualCameraUnavailable

    backends = vcam.available_backends()
    if options.vcam_backend is None and not backends:
        _explain_missing_camera(progress)
        raise PluginError(f"no virtual camera backend on this system; {vcam.missing_camera_summary()}")
    try:
        return VirtualCameraSink(out_size[0], out_size[1], out_fps, backend=options.vcam_backend,
                                 device=options.vcam_device)
    except VirtualCameraUnavailable as error:
        if options.vcam_backend is not None and options.vcam_backend not in backends:
            raise PluginError(f"{error}") from None
        _explain_missing_camera(progress)
        raise PluginError(f"{error}; {vcam.missing_camera_summary()}") from None


def check_not_a_loop(source, camera_sink) -> None:
    input_device = _camera_device_path(source)
    if input_device is not None and camera_sink.device and input_device == os.path.realpath(str(camera_sink.device)):
        raise PluginError(f"the input {input_device} is the virtual camera itself; pick your real camera with --input")


class LiveCall:
    """The restoring part of one `camera` run: its pipeline (entered on the run's exit stack), its outputs, the
    run itself and the closing lines."""

    def __init__(self, options: Options, stack: contextlib.ExitStack, control: Optional[LiveControl], progress):
        self.options, self.stack, self.control, self.progress = options, stack, control, progress
        self.pipeline = None

    def load(self, bundle, profiles: dict, source, shown) -> tuple:
        """The engine and a warmed-up crop restorer per profile. From a live camera, its own frames go to the
        virtual camera (`shown`) meanwhile (seconds; minutes when TensorRT engines are built), so call apps can
        already list and select the device: with v4l2loopback's exclusive_caps=1 it is only listed while it
        receives frames. Failures of that passthrough are not reported: the restoring run meets them again and
        says them."""
        from instantrestore.runtime.frames.live_run import LiveOptions, run_live
        from instantrestore.runtime.frames.stages import Stages

        options, progress = self.options, self.progress

        def load_and_warm_up():
            engine = load_engine(bundle, options.backend, options.device, None, progress)
            restorers = {name: engine.crop_restorer(profile) for name, profile in profiles.items()}
            # the first restore pays for CUDA-graph capture, autotuning or the first engine run: not on air
            for restore_crops in restorers.values():
                restore_crops(np.zeros((1, engine.crop_size, engine.crop_size, 3), np.uint8))
            return engine, restorers

        if not source.live:
            return load_and_warm_up()
        progress("it shows your camera as it is until the model is loaded")
        loaded, passthrough = threading.Event(), Stages()
        passthrough.start(lambda: run_live(None, source, shown, LiveOptions(halt=loaded)), "passthrough")
        try:
            return load_and_warm_up()
        finally:
            loaded.set()
            passthrough.join(timeout=5.0)

    def start(self, engine, bundle, profiles: dict, restorers: dict):
        from instantrestore.runtime.frames.pipeline import face_pipeline

        self.pipeline = self.stack.enter_context(face_pipeline(profiles, restorers, engine.crop_size,
                                                               self.options.blend))
        if self.control is not None:
            self.control.attach(self.pipeline, engine, bundle)
        return self.pipeline

    def output(self, camera_sink, out_size):
        """The virtual camera, and the preview window and the stats log when asked for, fitted to the output size."""
        from instantrestore.runtime.media import FittedSink, PreviewSink, TeeSink

        sinks = [camera_sink]
        if self.options.preview:
            overlay = self.pipeline.stats.draw if self.options.show_stats else None
            sinks.append(self.stack.enter_context(contextlib.closing(PreviewSink(overlay=overlay))))
        if self.options.show_stats:
            sinks.append(StatsLog(self.pipeline.stats, self.progress))
        return FittedSink(TeeSink(*sinks), out_size)

    def run(self, source, output, out_fps: float) -> tuple:
        """(the LiveReport or None when the user stopped it with Ctrl+C or the preview, what stopped it)."""
        from instantrestore.runtime.frames.live_run import LiveOptions, run_live
        from instantrestore.runtime.media import PreviewClosed

        control, max_frames = self.control, self.options.max_frames
        try:
            report = run_live(self.pipeline, source, output, LiveOptions(
                max_frames=max_frames, fps=out_fps, halt=control.stop if control else None,
                on_frame=control.on_frame if control else None))
        except (KeyboardInterrupt, PreviewClosed):
            return None, "user"
        if max_frames is not None and report.captured >= max_frames:
            return report, count_text(max_frames, "frame")
        if control is not None and control.stop.is_set():
            return report, "user"
        return report, "end of input"

    def summary(self, report, stopped_by: str, sent: int) -> dict:
        summary = self.pipeline.stats.summary()
        self.progress(f"stopped ({stopped_by}): {count_text(sent, 'frame')} sent to the virtual camera"
                      + (f", {report.processed} restored, {report.dropped} dropped, {report.repeated} repeated, "
                         f"latency {report.mean_latency_s * 1000:.0f} ms mean, {report.p95_latency_s * 1000:.0f} ms "
                         "p95" if report is not None else ""))
        self.progress(faces_line(summary))
        if self.options.show_stats:
            self.progress("stats: " + self.pipeline.stats.format_line())
        return {"sent": sent, "report": report, "stats": summary}


def open_delayed_microphone(options: Options, progress) -> Optional[audio_sync.DelayedMicrophone]:
    """The delayed microphone when asked for (--sync-audio) and possible here; else None, said in one line: the
    camera goes on, and the number to type by hand is said once the latency is measured."""
    if not options.sync_audio:
        return None
    try:
        microphone = audio_sync.DelayedMicrophone(options.audio_source).start(audio_sync.INITIAL_DELAY_S)
    except audio_sync.AudioSyncUnavailable as error:
        progress(f"sound sync: {error}; the camera goes on without it")
        return None
    if microphone.left_over:
        progress(f"sound sync: removed the {microphone.left_over} sound-server modules an earlier run left")
    progress(f"sound sync: pick \"{audio_sync.MICROPHONE_NAME}\" as the microphone in your call app: your "
             f"microphone {microphone.source}, delayed as late as the picture ({audio_sync.server_name()})")
    return microphone


def _explain_missing_camera(progress) -> None:
    for line in vcam.setup_instructions():
        progress(line)
    note = vcam.environment_note()
    if note:
        progress(note)
