"""The Live tab: the camera restored into the virtual camera, its preview, and the settings that change while
it runs (strength, profiles) or after a restart (camera, file, backend)."""

import dataclasses

from instantrestore.runtime.backends import CHOICES

from ..cameras import list_cameras
from ..commands import camera
from ..errors import PluginError
from ..messages import error_line
from .jobs import LiveJob
from .serving import check_server_path
from .widgets import TICK_S, paths_note, profiles_picker, side_by_side, strength_slider, thumbnail


@dataclasses.dataclass
class LiveTab:
    camera: object
    camera_file: object
    profile: object
    strength: object
    backend: object
    side: object
    sync: object
    start: object
    stop: object
    preview: object
    stats: object
    status: object
    settings: object
    timer: object


def build(gr, panel) -> LiveTab:
    cameras = list_cameras()
    with gr.Row():
        with gr.Column():
            camera = gr.Dropdown(label="Camera" if cameras else "Camera (none found: plug one in, or "
                                 "play a video file below)", choices=cameras,
                                 value=cameras[0][1] if cameras else None, elem_id="live-camera")
            camera_file = gr.Textbox(label="Or play a video file as the camera (its path"
                                     f"{paths_note(panel)})", elem_id="live-file")
            profile = profiles_picker(gr, "live-profile")
            strength = strength_slider(gr, "live-strength")
            backend = gr.Dropdown(label="Backend", choices=list(CHOICES), value="auto", elem_id="live-backend")
            side = gr.Checkbox(label="Show the camera's own picture beside it", elem_id="live-side")
            sync = gr.Checkbox(label="Delay my microphone to match the picture (InstantRestore "
                                     "Microphone; Linux with PulseAudio or PipeWire)", elem_id="live-sync")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="live-start")
                stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
        with gr.Column():
            preview = gr.Image(label="Output preview", interactive=False, elem_id="live-preview")
            stats = gr.Markdown(elem_id="live-stats")
            status = gr.Markdown(elem_id="live-status")
            settings = gr.Markdown(elem_id="live-settings")
    timer = gr.Timer(TICK_S, active=False)
    return LiveTab(camera, camera_file, profile, strength, backend, side, sync, start, stop, preview, stats, status,
                   settings, timer)


def live_line(job) -> str:
    """The live job's state in one line."""
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


def start_handler(gr, panel, tab: LiveTab):
    """on_start, given the tab's inputs as {component: value}: the session's live job started, or why not."""

    def on_start(values: dict, request: gr.Request):
        session = panel.session(request)
        if session.live is not None and session.live.running:
            return "the camera is already live; Stop it first", gr.update(), gr.update()
        try:
            file_spec = (values[tab.camera_file] or "").strip()
            spec = str(check_server_path(file_spec, panel.allowed_dirs)) if file_spec else values[tab.camera]
            if not values[tab.profile]:
                raise PluginError("enroll a profile first (Enroll tab)")
            if spec is None:
                raise PluginError("no camera found; plug one in, or give a video file")
            options = camera.Options(values[tab.profile], input=spec, backend=values[tab.backend],
                                     blend=float(values[tab.strength]), sync_audio=bool(values[tab.sync]))
        except PluginError as error:
            return error_line(error), gr.update(), gr.update()
        session.live = LiveJob(options)
        return "starting...", gr.Timer(active=True), ""

    return on_start


def running_handlers(gr, panel) -> tuple:
    """on_stop, on_live_tick: stopping the session's live job, and showing it while it runs."""

    def on_stop(request: gr.Request):
        session = panel.find(request)
        if session.live is None or not session.live.running:
            return "not live", gr.update()
        session.stop_live()
        return live_line(session.live), gr.Timer(active=True)  # polled until it has settled

    def on_live_tick(with_raw, request: gr.Request):
        job = panel.find(request).live
        if job is None:
            return gr.update(), "", "", gr.Timer(active=False)
        image = gr.update()
        if job.latest is not None:
            raw, shown = job.latest
            image = side_by_side(raw, shown) if with_raw else thumbnail(shown)
        stats = job.counters() if job.running else ""
        return image, stats, live_line(job), gr.Timer(active=not job.settled)

    return on_stop, on_live_tick


def settings_handlers(gr, panel) -> tuple:
    """on_strength, on_live_profile, needs_restart: what a changed setting does to the running job."""

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

    return on_strength, on_live_profile, needs_restart


def wire(gr, panel, tab: LiveTab) -> None:
    on_stop, on_live_tick = running_handlers(gr, panel)
    on_strength, on_live_profile, needs_restart = settings_handlers(gr, panel)
    tab.start.click(start_handler(gr, panel, tab),
                    {tab.camera, tab.camera_file, tab.profile, tab.strength, tab.backend, tab.sync},
                    [tab.status, tab.timer, tab.settings])
    tab.stop.click(on_stop, None, [tab.status, tab.timer])
    tab.timer.tick(on_live_tick, [tab.side], [tab.preview, tab.stats, tab.status, tab.timer])
    tab.strength.change(on_strength, [tab.strength], [tab.settings])
    tab.profile.change(on_live_profile, [tab.profile], [tab.settings])
    for control in (tab.camera, tab.camera_file, tab.backend):
        control.change(needs_restart, None, [tab.settings])
