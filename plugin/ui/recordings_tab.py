"""The Recordings tab: a video (uploaded, or a path under the allowed folders) restored into the outputs
folder, with its progress, a before | after frame, and the file to download."""

import dataclasses
from pathlib import Path

from .. import home
from ..errors import PluginError
from ..commands import video
from ..messages import error_line
from .jobs import RecordingJob, with_names
from .serving import check_output_name, check_server_path
from .widgets import TICK_S, outputs_dir, paths_note, profiles_picker, side_by_side, strength_slider


@dataclasses.dataclass
class RecordingsTab:
    video: object
    video_path: object
    profile: object
    strength: object
    out_name: object
    replace: object
    restore: object
    cancel: object
    progress: object
    status: object
    before_after: object
    result: object
    timer: object


def build(gr, panel) -> RecordingsTab:
    with gr.Row():
        with gr.Column():
            video = gr.File(label="Upload a video", file_types=["video"], type="filepath", elem_id="rec-upload")
            video_path = gr.Textbox(label="Or a path on the panel's computer (large files: no upload"
                                    f"{paths_note(panel)})", elem_id="rec-path")
            profile = profiles_picker(gr, "rec-profile")
            strength = strength_slider(gr, "rec-strength")
            out_name = gr.Textbox(label=f"Output file name (saved in {outputs_dir()})",
                                  placeholder="talk.restored.mp4", elem_id="rec-out")
            replace = gr.Checkbox(label="Replace the output if it exists", elem_id="rec-replace")
            with gr.Row():
                restore = gr.Button("Restore", variant="primary", elem_id="rec-start")
                cancel = gr.Button("Cancel", variant="stop", elem_id="rec-cancel")
        with gr.Column():
            progress = gr.Slider(0, 100, value=0, label="Progress (%)", interactive=False, elem_id="rec-bar")
            status = gr.Markdown(elem_id="rec-status")
            before_after = gr.Image(label="Before | after", interactive=False, elem_id="rec-frame")
            result = gr.File(label="Restored video", interactive=False, elem_id="rec-result")
    timer = gr.Timer(TICK_S, active=False)
    return RecordingsTab(video, video_path, profile, strength, out_name, replace, restore, cancel, progress, status,
                         before_after, result, timer)


def chosen_source(panel, upload, path_text: str, shown_names: dict) -> Path:
    """The video to restore: the upload, else the typed path (only under the allowed folders). `shown_names`
    learns the name the user knows it by, for the messages."""
    if upload:
        source = Path(upload)
        shown_names[str(source)] = source.name  # Gradio keeps the picked file's name
    elif path_text:
        source = check_server_path(path_text, panel.allowed_dirs)
        shown_names[str(source)] = path_text
    else:
        raise PluginError("choose a video: upload one or give its path")
    return source


def output_path(source: Path, output_name: str) -> Path:
    """The file to write in the outputs folder (made if need be): the name given, or SOURCE.restored.mp4."""
    output_name = check_output_name(output_name or source.stem + ".restored.mp4")
    if not Path(output_name).suffix:
        output_name += ".mp4"
    folder = outputs_dir()
    home.check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / output_name


def restore_handler(gr, panel, tab: RecordingsTab):
    """on_restore, given the tab's inputs as {component: value}: the session's recording started, or why not."""

    def on_restore(values: dict, request: gr.Request):
        session = panel.session(request)
        if session.recording is not None and session.recording.running:
            return "a recording is being restored; wait or cancel it", gr.update(), gr.update()
        shown_names = {}
        try:
            source = chosen_source(panel, values[tab.video], (values[tab.video_path] or "").strip(), shown_names)
            if not values[tab.profile]:
                raise PluginError("enroll a profile first (Enroll tab)")
            output = output_path(source, (values[tab.out_name] or "").strip())
            options = video.Options(source, output, values[tab.profile], blend=float(values[tab.strength]),
                                    overwrite=bool(values[tab.replace]))
        except Exception as error:  # noqa: BLE001
            return with_names(error_line(error), shown_names), gr.update(), gr.update()
        session.recording = RecordingJob(options, shown_names=shown_names)
        return "starting...", None, gr.Timer(active=True)

    return on_restore


def running_handlers(gr, panel) -> tuple:
    """on_cancel, on_rec_tick: cancelling the session's recording, and showing it while it runs."""

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

    return on_cancel, on_rec_tick


def wire(gr, panel, tab: RecordingsTab) -> None:
    on_cancel, on_rec_tick = running_handlers(gr, panel)
    tab.restore.click(restore_handler(gr, panel, tab),
                      {tab.video, tab.video_path, tab.profile, tab.strength, tab.out_name, tab.replace},
                      [tab.status, tab.result, tab.timer])
    tab.cancel.click(on_cancel, None, [tab.status])
    tab.timer.tick(on_rec_tick, None, [tab.progress, tab.status, tab.before_after, tab.result, tab.timer])
