"""The control panel's page (Gradio Blocks): its tabs, and what each button does. Every handler works on the
session of the browser that called it (Panel.session), and opens server paths only through the allowed folders.
"""


import os
from pathlib import Path

import numpy as np

from instantrestore.runtime.backends import CHOICES

from .. import engine, home, vcam
from ..camera import CameraOptions
from ..enroll import EnrollOptions, check_selfies, enroll
from ..errors import PluginError
from ..video import VideoOptions
from .jobs import LiveJob, Panel, RecordingJob, error_line, with_names
from .serving import check_output_name, check_server_path

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


def outputs_dir() -> Path:
    """Where the panel writes restored recordings (served to the browser for download)."""
    return home.state_dir() / "restored"


def list_cameras() -> list:
    """(label, input spec) for each camera this system has, by name where the OS gives one."""
    if vcam.platform_name() == "linux":
        return [(f"{device.name} ({device.path})", device.path) for device in vcam.linux_video_devices()
                if not device.loopback]
    from ..doctor import _probe_opencv_cameras

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


# ------------------------------------------------------------------------------------------------ the page


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

    # uploads and thumbnails older than a day go hourly (a panel left running for weeks); the rest on stop
    with gr.Blocks(title="InstantRestore Live", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
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
                        camera_file = gr.Textbox(label="Or play a video file as the camera (its path"
                                                 f"{paths_note(panel)})", elem_id="live-file")
                        live_profile = profiles_picker("live-profile")
                        strength = strength_slider("live-strength")
                        live_backend = gr.Dropdown(label="Backend", choices=list(CHOICES), value="auto",
                                                   elem_id="live-backend")
                        side = gr.Checkbox(label="Show the camera's own picture beside it", elem_id="live-side")
                        sync = gr.Checkbox(label="Delay my microphone to match the picture (InstantRestore "
                                                 "Microphone; Linux with PulseAudio or PipeWire)", elem_id="live-sync")
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
                        video_path = gr.Textbox(label="Or a path on the panel's computer (large files: no upload"
                                                f"{paths_note(panel)})", elem_id="rec-path")
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

        def on_shot(image, files, shot_paths, request: gr.Request):
            if image is None:
                return shot_paths, *on_photos(files, shot_paths)[:2], "take a photo with the webcam first"
            from PIL import Image

            folder = panel.session(request).shots_dir
            path = folder / f"webcam-{len(list(folder.iterdir())) + 1}.png"
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
        def on_start(camera_spec, file_spec, profile_name, blend, backend, sync_audio, request: gr.Request):
            session = panel.session(request)
            if session.live is not None and session.live.running:
                return "the camera is already live; Stop it first", gr.update(), gr.update()
            try:
                file_spec = (file_spec or "").strip()
                spec = str(check_server_path(file_spec, panel.allowed_dirs)) if file_spec else camera_spec
                if not profile_name:
                    raise PluginError("enroll a profile first (Enroll tab)")
                if spec is None:
                    raise PluginError("no camera found; plug one in, or give a video file")
            except PluginError as error:
                return error_line(error), gr.update(), gr.update()
            session.live = LiveJob(CameraOptions(profile_name, input=spec, backend=backend, blend=float(blend),
                                                 sync_audio=bool(sync_audio)))
            return "starting...", gr.Timer(active=True), ""

        def on_stop(request: gr.Request):
            session = panel.find(request)
            if session.live is None or not session.live.running:
                return "not live", gr.update()
            session.stop_live()
            return live_line(session.live), gr.Timer(active=session.live.running)  # a camera slow to let go

        def live_line(job) -> str:
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

        def on_live_tick(with_raw, request: gr.Request):
            job = panel.find(request).live
            if job is None:
                return gr.update(), "", "", gr.Timer(active=False)
            image = gr.update()
            if job.latest is not None:
                raw, shown = job.latest
                image = side_by_side(raw, shown) if with_raw else thumbnail(shown)
            stats = job.counters() if job.running else ""
            return image, stats, live_line(job), gr.Timer(active=job.running)

        def on_strength(blend, request: gr.Request):
            job = panel.find(request).live
            if job is not None and job.running:
                job.control.set_blend(float(blend))
                return f"strength {blend:.2f} (applied now)"
            return gr.update()

        def on_live_profile(profile_names, request: gr.Request):
            job = panel.find(request).live
            if job is None or not job.running or not profile_names:
                return gr.update()
            try:
                job.control.set_profile(profile_names)
                named = ", ".join(repr(name) for name in profile_names)
                return f"profile{'s' if len(profile_names) > 1 else ''} {named} (applied now)"
            except Exception as error:  # noqa: BLE001
                return error_line(error)

        def needs_restart(request: gr.Request):
            job = panel.find(request).live
            if job is not None and job.running:
                return "this takes effect after a restart: Stop, then Start"
            return gr.update()

        start.click(on_start, [camera, camera_file, live_profile, strength, live_backend, sync],
                    [live_status, live_timer, live_settings])
        stop.click(on_stop, None, [live_status, live_timer])
        live_timer.tick(on_live_tick, [side], [preview, live_stats, live_status, live_timer])
        strength.change(on_strength, [strength], [live_settings])
        live_profile.change(on_live_profile, [live_profile], [live_settings])
        for control in (camera, camera_file, live_backend):
            control.change(needs_restart, None, [live_settings])

        # ---------------------------------------------------------------- recording events
        def on_restore(upload, path_text, profile_name, blend, output_name, overwrite, request: gr.Request):
            session = panel.session(request)
            if session.recording is not None and session.recording.running:
                return "a recording is being restored; wait or cancel it", gr.update(), gr.update()
            shown_names = {}
            try:
                path_text = (path_text or "").strip()
                if upload:
                    source = Path(upload)
                    shown_names = {str(source): source.name}  # Gradio keeps the picked file's name
                elif path_text:
                    source = check_server_path(path_text, panel.allowed_dirs)
                    shown_names = {str(source): path_text}
                else:
                    raise PluginError("choose a video: upload one or give its path")
                if not profile_name:
                    raise PluginError("enroll a profile first (Enroll tab)")
                output_name = check_output_name((output_name or "").strip() or source.stem + ".restored.mp4")
                if not Path(output_name).suffix:
                    output_name += ".mp4"
                folder = outputs_dir()
                home.check_writable(folder)
                folder.mkdir(parents=True, exist_ok=True)
            except Exception as error:  # noqa: BLE001
                return with_names(error_line(error), shown_names), gr.update(), gr.update()
            session.recording = RecordingJob(VideoOptions(source, folder / output_name, profile_name,
                                                          blend=float(blend), overwrite=bool(overwrite)),
                                             shown_names=shown_names)
            return "starting...", None, gr.Timer(active=True)

        def on_cancel(request: gr.Request):
            job = panel.find(request).recording
            if job is None or not job.running:
                return "nothing to cancel"
            job.cancel.set()
            job.join(timeout=30.0)
            if job.running:  # taken at the first frame: the model is still loading
                return "cancelling: it stops as soon as the model has loaded, and writes nothing"
            return job.error or "cancelled"

        def on_rec_tick(request: gr.Request):
            job = panel.find(request).recording
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
            from .. import doctor

            return system_line(), doctor_table(doctor.run_checks())

        recheck.click(on_check, None, [system_summary, report])
        demo.load(on_check, None, [system_summary, report])
        demo.load(refresh_profiles, None, profile_outputs)
        def on_unload(request: gr.Request):
            panel.end_session(request)  # closing the tab leaves no camera held

        demo.unload(on_unload)
    return demo


def paths_note(panel: Panel) -> str:
    """What the path boxes accept, said in their labels."""
    if not panel.allowed_dirs:
        return "; off: start the panel with --allow-dir DIR to allow a folder"
    return "; under " + ", ".join(str(folder) for folder in panel.allowed_dirs)


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
