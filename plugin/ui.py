"""`instantrestore ui`: the control panel in the browser (Gradio). Enroll, go live and restore recordings
without a terminal.

The panel is one more client of the jobs the commands run (enroll.check_selfies, enroll.enroll,
camera.run_camera, video.restore_video; doctor's checks): it holds no logic of its own beyond showing what they
do. The long jobs run on a thread of their own; a timer on the page polls them. It serves on 127.0.0.1 only
unless --host is given, and never makes a public share link: the camera feed and the selfies are private.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from instantrestore.runtime.backends import CHOICES
from instantrestore.runtime.errors import InstantRestoreError

from . import engine, home, vcam
from .camera import CameraOptions, LiveControl, run_camera
from .enroll import EnrollOptions, check_selfies, enroll
from .errors import PluginError
from .progress import clock, say
from .video import VideoOptions, restore_video

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 7860
INSTALL_HINT = 'the control panel needs Gradio; from a checkout: pip install -e ".[ui]"'
PREVIEW_WIDTH = 480  # the page's preview: a few frames a second, small enough to send as PNG
TICK_S = 0.5


def import_gradio():
    # No usage reports to Gradio's servers: this page shows a private camera feed and selfies.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise PluginError(INSTALL_HINT) from None
    return gradio


def error_line(error: BaseException) -> str:
    from .cli import error_line as cli_error_line

    return cli_error_line(error)


def outputs_dir() -> Path:
    """Where the panel writes restored recordings (served to the browser for download)."""
    return home.state_dir() / "restored"


def list_cameras() -> list:
    """(label, input spec) for each camera this system has, by name where the OS gives one."""
    if vcam.platform_name() == "linux":
        return [(f"{device.name} ({device.path})", device.path) for device in vcam.linux_video_devices()
                if not device.loopback]
    from .doctor import _probe_opencv_cameras

    return [(f"Camera {index}", str(index)) for index in _probe_opencv_cameras()]


def profile_rows() -> list:
    """name, photos, created, whether it fits the current bundle: what `profiles` lists."""
    current = home.default_bundle_id()
    rows = []
    for info in home.list_profiles():
        if info.error:
            rows.append([info.name, "", "", info.error])
            continue
        fits = "no bundle yet" if current is None else ("yes" if info.bundle_id == current else
                                                        "no: made for another bundle, enroll again")
        rows.append([info.name, info.count, info.created, fits])
    return rows


# Live and recordings restore each enrolled person in view with their own profile; faces of no one chosen stay
PROFILES_LABEL = "Profiles (the people to restore; anyone else is left as they are)"


def profile_names() -> list:
    return [info.name for info in home.list_profiles() if not info.error]


def thumbnail(image: np.ndarray, width: int = PREVIEW_WIDTH) -> np.ndarray:
    import cv2

    if image.shape[1] <= width:
        return image
    height = int(round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    left, right = thumbnail(left, PREVIEW_WIDTH // 2), thumbnail(right, PREVIEW_WIDTH // 2)
    height = max(left.shape[0], right.shape[0])
    pad = lambda image: np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)))  # noqa: E731
    return np.concatenate([pad(left), np.full((height, 4, 3), 255, np.uint8), pad(right)], axis=1)


# ------------------------------------------------------------------------------------------------ enroll


def check_photos(paths) -> tuple[list, list]:
    """(gallery items, one line per photo) for the photos given: each one's aligned face, or why it is refused;
    the same checks as `enroll`. Lines name the file as the user called it, not the upload's temp path."""
    bundle = home.resolve_bundle()
    gallery, lines = [], []
    for path, result in check_selfies([Path(p) for p in paths], bundle.crop_size).items():
        if isinstance(result, str):
            lines.append("refused: " + result.replace(str(path), path.name))
            continue
        gallery.append((result.face.crop, path.name))
        lines.append(f"ok: {path.name}: face of {result.face.face_size:.0f} pixels")
    return gallery, lines


# ------------------------------------------------------------------------------------------------ jobs on threads


class Job:
    """One long job on its own thread: its log lines, its one-line error, whether it is still running."""

    def __init__(self, target, **kwargs):
        self.lines: collections.deque = collections.deque(maxlen=50)
        self.error: Optional[str] = None
        self.result = None
        self.latest: Optional[tuple] = None  # (raw, restored) frames for the preview
        self._thread = threading.Thread(target=self._run, args=(target, kwargs), name="instantrestore-panel-job",
                                        daemon=True)
        self._thread.start()

    def _run(self, target, kwargs):
        try:
            self.result = target(progress=self.say, **kwargs)
        except Cancelled:
            self.error = "cancelled; nothing was written"
        except Exception as error:  # noqa: BLE001 - shown in the page as the CLI's one line; the server goes on
            self.error = error_line(error)
            if not isinstance(error, InstantRestoreError):  # a bug: where it happened goes to the terminal, to report
                traceback.print_exc()

    def say(self, line: str) -> None:
        self.lines.append(line)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)


class Cancelled(Exception):
    """The user cancelled a recording's restore (raised from its progress callback)."""


class LiveJob(Job):
    def __init__(self, options: CameraOptions):
        self.control = LiveControl(on_frame=self._frame)
        self.latencies: collections.deque = collections.deque(maxlen=30)
        super().__init__(run_camera, options=options, control=self.control)

    def _frame(self, raw, shown, latency_s):
        self.latest = (raw, shown)  # one reference swap: the output loop never waits for the page
        self.latencies.append(latency_s)

    def stop(self) -> None:
        self.control.stop.set()
        self.join(timeout=15.0)

    def counters(self) -> str:
        pipeline = self.control.pipeline
        if pipeline is None:
            return "loading the model..."
        summary = pipeline.stats.summary()
        restore = summary["stages"].get("restore", {}).get("mean_ms", 0.0)
        latency = 1000.0 * sum(self.latencies) / len(self.latencies) if self.latencies else 0.0
        return (f"{summary['fps']:.1f} frames/s | latency {latency:.0f} ms | restore {restore:.0f} ms | "
                f"{int(summary.get('frames', 0))} frames sent | {int(summary.get('dropped', 0))} dropped")


class RecordingJob(Job):
    def __init__(self, options: VideoOptions):
        self.cancel = threading.Event()
        self.done, self.total, self.started = 0, 0, time.monotonic()
        self.output = options.output
        super().__init__(restore_video, options=options, frame_progress=self._progress, on_frame=self._frame)

    def _progress(self, done, total):
        if self.cancel.is_set():
            raise Cancelled()  # run_file stops and the half-written output is removed
        if self.done == 0:
            self.started = time.monotonic()  # the model load is not part of the rate
        self.done, self.total = done, total

    def _frame(self, raw, restored):
        if self.done % 10 == 0:  # a new before/after now and then is enough
            self.latest = (raw, restored)

    def progress_text(self) -> str:
        if not self.done:
            return "loading the model..."
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.done} frames done, {rate:.1f} frames/s"
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.done}/{self.total} frames, {100 * self.done / self.total:.0f}%, "
                f"about {clock(left)} left")


# ------------------------------------------------------------------------------------------------ the page


@dataclasses.dataclass
class Panel:
    """The page's state on the server: one local user, at most one live camera and one recording at a time."""

    live: Optional[LiveJob] = None
    recording: Optional[RecordingJob] = None
    shots_dir: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="instantrestore-shots-")))

    def stop_live(self) -> None:
        if self.live is not None and self.live.running:
            self.live.stop()

    def close(self) -> None:
        self.stop_live()
        if self.recording is not None and self.recording.running:
            self.recording.cancel.set()
            self.recording.join(timeout=30.0)
        shutil.rmtree(self.shots_dir, ignore_errors=True)


def build(panel: Panel):
    """The Gradio Blocks of the control panel."""
    gr = import_gradio()

    def refresh_profiles():
        names = profile_names()
        table = profile_rows() or [["(none yet)", "", "", ""]]
        first = names[0] if names else None
        # a fresh update for each dropdown: Gradio consumes the dict it is given; live and recordings take several
        return (table, gr.update(choices=names, value=first),
                *(gr.update(choices=names, value=[first] if first else []) for _ in range(2)))

    def profiles_picker(elem_id: str):
        """Live and recordings: the people to restore, each with their own profile."""
        return gr.Dropdown(label=PROFILES_LABEL, choices=profile_names(), multiselect=True, value=profile_names()[:1],
                           elem_id=elem_id)

    def strength_slider(elem_id: str):
        return gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (--blend)", elem_id=elem_id)

    with gr.Blocks(title="InstantRestore Live", analytics_enabled=False) as demo:
        gr.Markdown("# InstantRestore Live\nYour face, restored with your own photos: enroll once, then go live or "
                    "restore a recording.")
        with gr.Tabs():
            # ---------------------------------------------------------------- enroll
            with gr.Tab("Enroll", id="enroll"):
                gr.Markdown("Give 1 to 8 photos of your face (4 is best: different angles, expressions and light), "
                            "each with you alone. Every photo is checked as you add it.")
                with gr.Row():
                    photos = gr.File(label="Upload photos", file_count="multiple", file_types=["image"],
                                     type="filepath", elem_id="enroll-files")
                    with gr.Column():
                        webcam = gr.Image(label="Or take a photo with your webcam", sources=["webcam"],
                                          type="numpy", elem_id="enroll-webcam")
                        add_shot = gr.Button("Add this photo", elem_id="enroll-add-shot")
                shots = gr.State([])
                checked = gr.Gallery(label="Aligned faces", columns=4, height=220, elem_id="enroll-gallery")
                check_lines = gr.Markdown(elem_id="enroll-checks")
                with gr.Row():
                    name = gr.Textbox(label="Profile name", placeholder="me", elem_id="enroll-name")
                    save = gr.Button("Save profile", variant="primary", elem_id="enroll-save")
                    clear = gr.Button("Clear photos", elem_id="enroll-clear")
                enroll_status = gr.Markdown(elem_id="enroll-status")
                gr.Markdown("### Profiles")
                table = gr.Dataframe(headers=["name", "photos", "created", "fits the current bundle"],
                                     value=profile_rows() or [["(none yet)", "", "", ""]], interactive=False,
                                     elem_id="profiles-table")
                with gr.Row():
                    remove_pick = gr.Dropdown(label="Profile to remove", choices=profile_names(), elem_id="remove-pick")
                    remove = gr.Button("Remove profile", variant="stop", elem_id="remove-profile")

            # ---------------------------------------------------------------- live
            with gr.Tab("Live", id="live"):
                cameras = list_cameras()
                with gr.Row():
                    with gr.Column():
                        camera = gr.Dropdown(label="Camera" if cameras else "Camera (none found: plug one in, or "
                                             "play a video file below)", choices=cameras,
                                             value=cameras[0][1] if cameras else None, elem_id="live-camera")
                        camera_file = gr.Textbox(label="Or play a video file as the camera (its path)",
                                                 elem_id="live-file")
                        live_profile = profiles_picker("live-profile")
                        strength = strength_slider("live-strength")
                        live_backend = gr.Dropdown(label="Backend", choices=list(CHOICES), value="auto",
                                                   elem_id="live-backend")
                        side = gr.Checkbox(label="Show the camera's own picture beside it", elem_id="live-side")
                        with gr.Row():
                            start = gr.Button("Start", variant="primary", elem_id="live-start")
                            stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
                    with gr.Column():
                        preview = gr.Image(label="Output preview", interactive=False, elem_id="live-preview")
                        live_stats = gr.Markdown(elem_id="live-stats")
                        live_status = gr.Markdown(elem_id="live-status")
                        live_settings = gr.Markdown(elem_id="live-settings")
                live_timer = gr.Timer(TICK_S, active=False)

            # ---------------------------------------------------------------- recordings
            with gr.Tab("Recordings", id="recordings"):
                with gr.Row():
                    with gr.Column():
                        video = gr.File(label="Upload a video", file_types=["video"], type="filepath",
                                        elem_id="rec-upload")
                        video_path = gr.Textbox(label="Or a path on this computer (large files: no upload)",
                                                elem_id="rec-path")
                        rec_profile = profiles_picker("rec-profile")
                        rec_strength = strength_slider("rec-strength")
                        out_name = gr.Textbox(label=f"Output file name (saved in {outputs_dir()})",
                                              placeholder="talk.restored.mp4", elem_id="rec-out")
                        replace = gr.Checkbox(label="Replace the output if it exists", elem_id="rec-replace")
                        with gr.Row():
                            restore = gr.Button("Restore", variant="primary", elem_id="rec-start")
                            cancel = gr.Button("Cancel", variant="stop", elem_id="rec-cancel")
                    with gr.Column():
                        rec_progress = gr.Slider(0, 100, value=0, label="Progress (%)", interactive=False,
                                                 elem_id="rec-bar")
                        rec_status = gr.Markdown(elem_id="rec-status")
                        before_after = gr.Image(label="Before | after", interactive=False, elem_id="rec-frame")
                        result = gr.File(label="Restored video", interactive=False, elem_id="rec-result")
                rec_timer = gr.Timer(TICK_S, active=False)

            # ---------------------------------------------------------------- system
            with gr.Tab("System", id="system"):
                recheck = gr.Button("Check again", elem_id="sys-check")
                system_summary = gr.Markdown(elem_id="sys-summary")
                report = gr.Markdown(elem_id="sys-report")
                gr.Markdown("### Virtual camera setup on this computer\n```\n" + "\n".join(vcam.setup_instructions())
                            + "\n```")

        # ---------------------------------------------------------------- enroll events
        def on_photos(files, shot_paths):
            paths = list(files or []) + list(shot_paths)
            if not paths:
                return [], "", ""
            try:
                gallery, lines = check_photos(paths)
            except Exception as error:  # noqa: BLE001 - one line in the page; the server goes on
                return [], "", error_line(error)
            return gallery, "\n".join(f"- {line}" for line in lines), ""

        def on_shot(image, files, shot_paths):
            if image is None:
                return shot_paths, *on_photos(files, shot_paths)[:2], "take a photo with the webcam first"
            from PIL import Image

            path = panel.shots_dir / f"webcam-{len(list(panel.shots_dir.iterdir())) + 1}.png"
            Image.fromarray(image).save(path)
            shot_paths = list(shot_paths) + [str(path)]
            return shot_paths, *on_photos(files, shot_paths)

        def on_save(files, shot_paths, profile_name):
            paths = list(files or []) + list(shot_paths)
            try:
                if not paths:
                    raise PluginError("give at least one photo of your face")
                home.check_profile_name((profile_name or "").strip())
                log = []
                path = enroll(EnrollOptions(paths, profile_name.strip()), progress=log.append)
                photos_text = f"{len(paths)} photo{'s' if len(paths) != 1 else ''}"
                message = (f"profile {profile_name.strip()!r} saved from {photos_text}"
                           f" ({path}); choose it in Live and Recordings")
                message += "".join(f"  \n{line}" for line in log if line.startswith("tip:"))
            except Exception as error:  # noqa: BLE001
                message = error_line(error)
                for path in paths:  # the photo as the user named it, not the upload's temp path
                    message = message.replace(str(path), Path(path).name)
            return (message, *refresh_profiles())

        def on_remove(profile_name):
            try:
                if not profile_name:
                    raise PluginError("pick the profile to remove")
                home.remove_profile(profile_name)
                message = f"removed profile {profile_name!r}"
            except Exception as error:  # noqa: BLE001
                message = error_line(error)
            return (message, *refresh_profiles())

        profile_outputs = [table, remove_pick, live_profile, rec_profile]
        photos.change(on_photos, [photos, shots], [checked, check_lines, enroll_status])
        add_shot.click(on_shot, [webcam, photos, shots], [shots, checked, check_lines, enroll_status])
        clear.click(lambda: (None, None, [], [], "", ""), None,
                    [photos, webcam, shots, checked, check_lines, enroll_status])
        save.click(on_save, [photos, shots, name], [enroll_status, *profile_outputs])
        remove.click(on_remove, [remove_pick], [enroll_status, *profile_outputs])

        # ---------------------------------------------------------------- live events
        def on_start(camera_spec, file_spec, profile_name, blend, backend):
            if panel.live is not None and panel.live.running:
                return "the camera is already live; Stop it first", gr.update(), gr.update()
            spec = (file_spec or "").strip() or camera_spec
            if not profile_name:
                return error_line(PluginError("enroll a profile first (Enroll tab)")), gr.update(), gr.update()
            if spec is None:
                return (error_line(PluginError("no camera found; plug one in, or give a video file")), gr.update(),
                        gr.update())
            panel.live = LiveJob(CameraOptions(profile_name, input=spec, backend=backend, blend=float(blend)))
            return "starting...", gr.Timer(active=True), ""

        def on_stop():
            if panel.live is None or not panel.live.running:
                return "not live", gr.update()
            panel.stop_live()
            return live_line(), gr.Timer(active=panel.live.running)  # keep polling a camera slow to let go

        def live_line() -> str:
            job = panel.live
            if job is None:
                return ""
            if job.error:
                return job.error
            if not job.running:
                # the run's last words: how it stopped, then its account of the faces
                ending = [line for line in job.lines if line.startswith(("stopped", "faces:"))] or ["stopped"]
                return " ".join(ending) + " The camera is released."
            if job.control.camera_name:
                return f"live: pick **\"{job.control.camera_name}\"** as the camera in Zoom, Meet or Teams"
            return job.lines[-1] if job.lines else "starting..."

        def on_live_tick(with_raw):
            job = panel.live
            if job is None:
                return gr.update(), "", "", gr.Timer(active=False)
            image = gr.update()
            if job.latest is not None:
                raw, shown = job.latest
                image = side_by_side(raw, shown) if with_raw else thumbnail(shown)
            stats = job.counters() if job.running else ""
            return image, stats, live_line(), gr.Timer(active=job.running)

        def on_strength(blend):
            if panel.live is not None and panel.live.running:
                panel.live.control.set_blend(float(blend))
                return f"strength {blend:.2f} (applied now)"
            return gr.update()

        def on_live_profile(profile_names):
            if panel.live is None or not panel.live.running or not profile_names:
                return gr.update()
            try:
                panel.live.control.set_profile(profile_names)
                named = ", ".join(repr(name) for name in profile_names)
                return f"profile{'s' if len(profile_names) > 1 else ''} {named} (applied now)"
            except Exception as error:  # noqa: BLE001
                return error_line(error)

        def needs_restart():
            if panel.live is not None and panel.live.running:
                return "this takes effect after a restart: Stop, then Start"
            return gr.update()

        start.click(on_start, [camera, camera_file, live_profile, strength, live_backend],
                    [live_status, live_timer, live_settings])
        stop.click(on_stop, None, [live_status, live_timer])
        live_timer.tick(on_live_tick, [side], [preview, live_stats, live_status, live_timer])
        strength.change(on_strength, [strength], [live_settings])
        live_profile.change(on_live_profile, [live_profile], [live_settings])
        for control in (camera, camera_file, live_backend):
            control.change(needs_restart, None, [live_settings])

        # ---------------------------------------------------------------- recording events
        def on_restore(upload, path_text, profile_name, blend, output_name, overwrite):
            if panel.recording is not None and panel.recording.running:
                return "a recording is being restored; wait or cancel it", gr.update(), gr.update()
            try:
                source = upload or (path_text or "").strip()
                if not source:
                    raise PluginError("choose a video: upload one or give its path")
                if not profile_name:
                    raise PluginError("enroll a profile first (Enroll tab)")
                output_name = (output_name or "").strip() or Path(source).stem + ".restored.mp4"
                if Path(output_name).name != output_name:
                    raise PluginError(f"{output_name!r}: give a file name only; it is saved in {outputs_dir()}")
                if not Path(output_name).suffix:
                    output_name += ".mp4"
                folder = outputs_dir()
                home.check_writable(folder)
                folder.mkdir(parents=True, exist_ok=True)
            except Exception as error:  # noqa: BLE001
                return error_line(error), gr.update(), gr.update()
            panel.recording = RecordingJob(VideoOptions(Path(source), folder / output_name, profile_name,
                                                        blend=float(blend), overwrite=bool(overwrite)))
            return "starting...", None, gr.Timer(active=True)

        def on_cancel():
            job = panel.recording
            if job is None or not job.running:
                return "nothing to cancel"
            job.cancel.set()
            job.join(timeout=30.0)
            if job.running:  # taken at the first frame: the model is still loading
                return "cancelling: it stops as soon as the model has loaded, and writes nothing"
            return job.error or "cancelled"

        def on_rec_tick():
            job = panel.recording
            if job is None:
                return gr.update(), "", gr.update(), gr.update(), gr.Timer(active=False)
            image = side_by_side(*job.latest) if job.latest is not None else gr.update()
            percent = 100.0 * job.done / job.total if job.total else 0.0
            if job.running:
                return percent, job.progress_text(), image, gr.update(), gr.Timer(active=True)
            if job.error:
                return percent, job.error, image, None, gr.Timer(active=False)
            frames = job.result["frames"]
            return (100.0, f"done: {frames} frames written to {job.output}; download it below", image,
                    str(job.output), gr.Timer(active=False))

        restore.click(on_restore, [video, video_path, rec_profile, rec_strength, out_name, replace],
                      [rec_status, result, rec_timer])
        cancel.click(on_cancel, None, [rec_status])
        rec_timer.tick(on_rec_tick, None, [rec_progress, rec_status, before_after, result, rec_timer])

        # ---------------------------------------------------------------- system events
        def on_check():
            from . import doctor

            return system_line(), doctor_table(doctor.run_checks())

        recheck.click(on_check, None, [system_summary, report])
        demo.load(on_check, None, [system_summary, report])
        demo.load(refresh_profiles, None, profile_outputs)
        demo.unload(panel.stop_live)  # closing the tab leaves no camera held
    return demo


def doctor_table(results) -> str:
    """`doctor`'s report as a Markdown table: each finding and its next step."""
    cell = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| status | topic | detail | next step |", "|---|---|---|---|"]
    lines += [f"| {cell(item.status)} | {cell(item.topic)} | {cell(item.detail)} | {cell(item.next_step)} |"
              for item in results]
    return "\n".join(lines)


def system_line() -> str:
    """The bundle in use, the backend `auto` picks, the GPU."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (everything runs on the CPU)"
    try:
        bundle = home.resolve_bundle()
        choice = engine.choose_engine(bundle, "auto")
        backend = f"{choice.backend} on {choice.device} ({choice.reason.split(';')[0][:160]})"
        in_use = f"{bundle.path} ({bundle.config.get('dtype')})"
    except Exception as error:  # noqa: BLE001
        in_use, backend = error_line(error), "none until a bundle exists"
    return f"**Bundle:** {in_use}  \n**Backend:** {backend}  \n**GPU:** {gpu}"


def launch(panel: Panel, host: str = LOCALHOST, port: int = DEFAULT_PORT, open_browser: bool = True,
           block: bool = True):
    """Serve the panel. Never a public share link."""
    demo = build(panel)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser, prevent_thread_lock=not block,
                allowed_paths=[str(outputs_dir())], show_error=True, quiet=True, footer_links=["gradio", "settings"])
    return demo


def cmd_ui(args) -> int:
    import_gradio()  # the install hint comes before anything else
    host = args.host or LOCALHOST
    if args.host is not None and args.host not in (LOCALHOST, "localhost", "::1"):
        say(f"warning: serving on {host}: anyone who can reach this address sees your camera and your photos")
    panel = Panel()
    say(f"control panel: http://{'localhost' if host == LOCALHOST else host}:{args.port} (Ctrl+C stops it)")
    try:
        launch(panel, host, args.port, open_browser=not args.no_browser, block=True)
    finally:
        panel.close()
    return 0


def register(commands) -> None:
    parser = commands.add_parser("ui", help="open the control panel in your browser (enroll, live, recordings)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on (default %(default)s)")
    parser.add_argument("--host", help="serve on this address instead of 127.0.0.1 (others on the network can then "
                                       "see your camera and photos)")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")
    parser.set_defaults(run=cmd_ui)
