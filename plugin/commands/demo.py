"""`instantrestore demo`: every command tried without the hub or a GPU. A tiny model with random weights
(the miniature architecture, seconds to make) becomes the default bundle; everything made with it says
so on stderr and carries a DEMO MODEL mark on the faces it restores (home.resolve_bundle, runtime's Restorer).
"""

from __future__ import annotations

import dataclasses

from instantrestore.runtime import BundleError, load_bundle

from .. import home
from ..progress import TERMINAL, Progress
from . import Outcome
from .bundles import make_default

NAME = "demo"
SUMMARY = "try every command without the hub: a tiny random-weight model as the default bundle"
DESCRIPTION = ("Make a tiny model with random weights (seconds, no download, no GPU) the default bundle, so enroll, "
               "video, camera, the panel and bench can be tried on any machine. Its output is noise, marked DEMO "
               "MODEL; `instantrestore export` gets the real model.")
EXAMPLES = ("instantrestore demo", "instantrestore bundles use final_model_ckpt-float16   # back")

DEMO_BUNDLE = "demo-tiny"  # its folder under bundles/ in the state folder
DEMO_PROFILE = "demo"
NEXT_STEPS = f"""\
The demo model is the default bundle now. Try (each takes seconds on a CPU; the faces come out as noise,
marked DEMO MODEL):
  instantrestore enroll PHOTO.jpg [PHOTO2.jpg ...] --name {DEMO_PROFILE}      # photos of one face (yours)
  instantrestore video CLIP.mp4 -o restored.mp4 --profile {DEMO_PROFILE}      # a recording with that face
  instantrestore camera --profile {DEMO_PROFILE} --input CLIP.mp4 --preview   # a file played as the camera
  instantrestore camera --profile {DEMO_PROFILE}                              # your webcam, to the virtual camera
  instantrestore ui                                                 # the control panel (needs the [ui] extra)
  instantrestore bench                                              # the restore step, timed on this machine
The real model: `instantrestore export` (it becomes the default bundle)."""


@dataclasses.dataclass
class Options:
    """`demo` takes no options."""


def add_arguments(parser) -> None:
    pass


def demo_bundle(progress):
    """The demo bundle under bundles/, written unless a readable one is already there."""
    from instantrestore.export.random_bundle import write_random_bundle

    folder = home.check_writable(home.bundles_dir()) / DEMO_BUNDLE
    try:
        if load_bundle(folder).random_weights:
            progress(f"the demo bundle is already there: {folder}")
            return folder
    except BundleError:  # not written yet, or damaged: written (again)
        pass
    return write_random_bundle("tiny", folder, dtype="float32", progress=progress)


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    home.read_settings()  # a corrupt settings file is reported before anything is written
    previous = home.last_bundle_dir()
    folder = demo_bundle(progress)
    make_default(folder, previous, progress)  # says how to switch back to the previous default
    return Outcome(NEXT_STEPS.splitlines(), value=folder)
