"""What the panel's tabs share: Gradio itself, where restored files go, the profile pickers and the preview
images."""

import os
from pathlib import Path

import numpy as np

from .. import home
from ..errors import PluginError

INSTALL_HINT = 'the control panel needs Gradio; from a checkout: pip install -e ".[ui]"'
PREVIEW_WIDTH = 480  # the page's preview: a few frames a second, small enough to send as PNG
TICK_S = 0.5  # how often a running job's timer polls it
# Live and recordings restore each enrolled person in view with their own profile; faces of no one chosen stay
PROFILES_LABEL = "Profiles (the people to restore; anyone else is left as they are)"
NO_PROFILES_ROW = ["(none yet)", "", "", ""]


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


def paths_note(panel) -> str:
    """What the path boxes accept, said in their labels."""
    if not panel.allowed_dirs:
        return "; off: start the panel with --allow-dir DIR to allow a folder"
    return "; under " + ", ".join(str(folder) for folder in panel.allowed_dirs)


# ------------------------------------------------------------------------------------------------ profiles


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


def profile_names() -> list:
    return [info.name for info in home.list_profiles() if not info.error]


def profiles_picker(gr, elem_id: str):
    """Live and recordings: the people to restore, each with their own profile."""
    return gr.Dropdown(label=PROFILES_LABEL, choices=profile_names(), multiselect=True, value=profile_names()[:1],
                       elem_id=elem_id)


def strength_slider(gr, elem_id: str):
    return gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (--blend)", elem_id=elem_id)


def profiles_refresher(gr):
    """The handler that shows the profiles as they are now: the table, the removal pick, live's and
    recordings' pickers (in that order)."""

    def refresh_profiles():
        names = profile_names()
        first = names[0] if names else None
        # a fresh update for each dropdown: Gradio consumes the dict it is given; live and recordings take several
        return (profile_rows() or [NO_PROFILES_ROW], gr.update(choices=names, value=first),
                *(gr.update(choices=names, value=[first] if first else []) for _ in range(2)))

    return refresh_profiles


# ------------------------------------------------------------------------------------------------ images


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
