"""Which backend a command runs on: backends.select with the state folder's engine cache, building what the
choice needs first (export.build_for), and how a CPU run shares the cores."""

from __future__ import annotations

import os
from typing import Optional

from instantrestore.export.build import build_for, maker_for
from instantrestore.runtime.backends import Choice, backend_class, select
from instantrestore.runtime.graphs import precision_name

from .home import engines_dir
from .progress import say


def choose_engine(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None) -> Choice:
    """backends.select with the plugin's engine cache, where TensorRT's engines are built when missing
    (nothing is built or loaded here)."""
    return select(bundle, backend, device, dtype, engines=engines_dir(), can_build=True)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:  # Windows, macOS
        return os.cpu_count() or 1


def use_cpu_threads(choice: Choice) -> dict:
    """How a run on the CPU shares the cores, decided here for every backend: the model's intra-op
    threads (torch's, or onnxruntime's session) get all cores but one, which is left to the pipeline's
    own threads (decode, track, composite, encode), and OpenCV works single-threaded inside those.
    Oversubscribed, torch's OpenMP workers wait for each other whenever a core is taken: a 48-frame
    video on the test miniature, 2-core machine, one core busy elsewhere, took 13 to 34 s with torch's
    default of 2 threads and 4 to 6 s like this (README, Performance). Returns the backend's own options
    (onnxruntime's thread count); a GPU run changes nothing."""
    if not str(choice.device).startswith("cpu"):
        return {}
    import cv2
    import torch

    model_threads = max(1, usable_cores() - 1)
    torch.set_num_threads(model_threads)
    cv2.setNumThreads(1)
    option = backend_class(choice.backend).cpu_threads_option
    return {option: model_threads} if option else {}


def load_engine(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None, progress=say,
                **backend_options):
    """A Restorer for `bundle` on the chosen backend, building what that backend needs first; `backend_options`
    are the backend's own load options (bench: its compile_option)."""
    from instantrestore.runtime import load_restorer

    choice = choose_engine(bundle, backend, device, dtype)
    if backend == "auto" and choice.build:
        try:
            build_for(bundle, choice, engines_dir(), progress)
        except Exception as error:  # noqa: BLE001 - auto falls back instead of failing the job
            what = maker_for(choice).what
            progress(f"{what} failed ({' '.join(str(error).split())[:200]}); using another backend")
            choice = select(bundle, backend, device, dtype, engines=engines_dir())  # the next one that is ready
    else:
        build_for(bundle, choice, engines_dir(), progress)
    note = ""
    if backend == "auto" and not str(choice.device).startswith("cuda"):
        note = "; no GPU backend is usable here (`instantrestore doctor` says why)"
    progress(f"backend: {choice.backend} on {choice.device} ({precision_name(choice.dtype)}){note}")
    options = {**use_cpu_threads(choice), **backend_options}
    return load_restorer(bundle.path, backend=choice.backend, device=choice.device, dtype=choice.dtype,
                         engines=engines_dir(), **options)
