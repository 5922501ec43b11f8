"""The Enroll tab: photos (uploaded or taken with the webcam) checked as they come, a profile saved from them,
and the profiles there are."""

import dataclasses
from pathlib import Path

from .. import home
from ..commands import enroll
from ..errors import PluginError
from ..messages import error_line
from ..progress import Progress
from .widgets import NO_PROFILES_ROW, profile_names, profile_rows


@dataclasses.dataclass
class EnrollTab:
    photos: object
    webcam: object
    add_shot: object
    shots: object  # the webcam photos taken so far (paths in the session's folder)
    checked: object
    check_lines: object
    name: object
    save: object
    clear: object
    status: object
    table: object
    remove_pick: object
    remove: object


def build(gr) -> EnrollTab:
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
    status = gr.Markdown(elem_id="enroll-status")
    gr.Markdown("### Profiles")
    table = gr.Dataframe(headers=["name", "photos", "created", "fits the current bundle"],
                         value=profile_rows() or [NO_PROFILES_ROW], interactive=False, elem_id="profiles-table")
    with gr.Row():
        remove_pick = gr.Dropdown(label="Profile to remove", choices=profile_names(), elem_id="remove-pick")
        remove = gr.Button("Remove profile", variant="stop", elem_id="remove-profile")
    return EnrollTab(photos, webcam, add_shot, shots, checked, check_lines, name, save, clear, status, table,
                     remove_pick, remove)


def check_photos(paths) -> tuple[list, list]:
    """(gallery items, one line per photo) for the photos given: each one's aligned face, or why it is refused;
    the same checks as `enroll`. Lines name the file as the user called it, not the upload's temp path."""
    bundle = home.resolve_bundle()
    gallery, lines = [], []
    for path, result in enroll.check_selfies([Path(p) for p in paths], bundle.crop_size).items():
        if isinstance(result, str):
            lines.append("refused: " + result.replace(str(path), path.name))
            continue
        gallery.append((result.face.crop, path.name))
        lines.append(f"ok: {path.name}: face of {result.face.face_size:.0f} pixels")
    return gallery, lines


def on_photos(files, shot_paths):
    paths = list(files or []) + list(shot_paths)
    if not paths:
        return [], "", ""
    try:
        gallery, lines = check_photos(paths)
    except Exception as error:  # noqa: BLE001 - one line in the page; the server goes on
        return [], "", error_line(error)
    return gallery, "\n".join(f"- {line}" for line in lines), ""


def shot_handler(gr, panel):
    def on_shot(image, files, shot_paths, request: gr.Request):
        if image is None:
            return shot_paths, *on_photos(files, shot_paths)[:2], "take a photo with the webcam first"
        from PIL import Image

        folder = panel.session(request).shots_dir
        path = folder / f"webcam-{len(list(folder.iterdir())) + 1}.png"
        Image.fromarray(image).save(path)
        shot_paths = list(shot_paths) + [str(path)]
        return shot_paths, *on_photos(files, shot_paths)

    return on_shot


def save_profile(paths, profile_name) -> str:
    """Enroll the photos as `profile_name`: what the page says about it, a failure included."""
    try:
        options, log = enroll.Options(paths or [], (profile_name or "").strip()), []
        path = enroll.run(options, Progress(log.append)).value
        photos_text = f"{len(paths)} photo{'s' if len(paths) != 1 else ''}"
        message = f"profile {options.name!r} saved from {photos_text} ({path}); choose it in Live and Recordings"
        return message + "".join(f"  \n{line}" for line in log if line.startswith("tip:"))
    except Exception as error:  # noqa: BLE001
        message = error_line(error)
        for path in paths or []:  # the photo as the user named it, not the upload's temp path
            message = message.replace(str(path), Path(path).name)
        return message


def remove_profile(profile_name) -> str:
    try:
        if not profile_name:
            raise PluginError("pick the profile to remove")
        home.remove_profile(profile_name)
        return f"removed profile {profile_name!r}"
    except Exception as error:  # noqa: BLE001
        return error_line(error)


def wire(gr, panel, tab: EnrollTab, profile_outputs: list, refresh_profiles) -> None:
    """The tab's events; saving or removing a profile refreshes every profile list (`profile_outputs`)."""

    def on_save(files, shot_paths, profile_name):
        return (save_profile(list(files or []) + list(shot_paths), profile_name), *refresh_profiles())

    def on_remove(profile_name):
        return (remove_profile(profile_name), *refresh_profiles())

    tab.photos.change(on_photos, [tab.photos, tab.shots], [tab.checked, tab.check_lines, tab.status])
    tab.add_shot.click(shot_handler(gr, panel), [tab.webcam, tab.photos, tab.shots],
                       [tab.shots, tab.checked, tab.check_lines, tab.status])
    tab.clear.click(lambda: (None, None, [], [], "", ""), None,
                    [tab.photos, tab.webcam, tab.shots, tab.checked, tab.check_lines, tab.status])
    tab.save.click(on_save, [tab.photos, tab.shots, tab.name], [tab.status, *profile_outputs])
    tab.remove.click(on_remove, [tab.remove_pick], [tab.status, *profile_outputs])
