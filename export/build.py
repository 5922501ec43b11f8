"""What a backend choice needs made before it can load, made into an engines folder: one maker per kind a
backend declares it `builds` ("graphs": the ONNX export, "engines": the TensorRT build). The choice itself is
runtime's (backends.select); making is export's, and this table is the one place export says how."""

from __future__ import annotations

import dataclasses
from typing import Callable

from instantrestore.runtime.backends import Choice, backend_class
from instantrestore.runtime.errors import InstantRestoreError
from instantrestore.runtime.graphs import precision_name

from .progress import report


@dataclasses.dataclass(frozen=True)
class Maker:
    make: Callable  # (bundle, choice, engines, progress) -> {graph: path}, reusing valid ones
    missing: str  # said before making; {precision} is the choice's ("fp16", "fp32")
    what: str  # names the making when it fails ("TensorRT engine build")


def make_onnx_graphs(bundle, choice: Choice, engines, progress=None) -> dict:
    from .onnx_export import export_onnx

    export_device = choice.device if str(choice.device).startswith("cuda") else "cpu"  # cuda:1 stays cuda:1
    return export_onnx(bundle.path, engines=engines, dtype=precision_name(choice.dtype), device=export_device,
                       progress=progress)


def make_tensorrt_engines(bundle, choice: Choice, engines, progress=None) -> dict:
    from .tensorrt_build import build_engines

    return build_engines(bundle.path, engines=engines, precision=precision_name(choice.dtype), progress=progress,
                         device=choice.device)


# kind (a backend's `builds`) -> how export makes it; a backend that builds something new registers its maker
MAKERS: dict[str, Maker] = {
    "graphs": Maker(make_onnx_graphs, "no {precision} ONNX graphs for this bundle yet; exporting them once",
                    "ONNX graph export"),
    "engines": Maker(make_tensorrt_engines,
                     "no TensorRT engines for this bundle and GPU yet; building them once (this takes minutes)",
                     "TensorRT engine build"),
}


def register_maker(kind: str, maker: Maker) -> None:
    MAKERS[kind] = maker


def maker_for(choice: Choice):
    """The Maker of what `choice`'s backend builds, or None when it builds nothing."""
    kind = backend_class(choice.backend).builds
    if kind is None:
        return None
    if kind not in MAKERS:
        raise InstantRestoreError(f"backend {choice.backend} needs {kind!r} built, and export has no maker for it")
    return MAKERS[kind]


def make_for(bundle, choice: Choice, engines, progress=None) -> dict:
    """Make what `choice`'s backend builds (ONNX graphs, TensorRT engines) into `engines`, reusing valid ones;
    returns {graph: path} ({} for a backend that needs nothing made)."""
    maker = maker_for(choice)
    return {} if maker is None else maker.make(bundle, choice, engines, progress)


def build_for(bundle, choice: Choice, engines, progress=None) -> None:
    """make_for, when `choice` says what it needs is missing (choice.build); nothing otherwise."""
    maker = maker_for(choice) if choice.build else None
    if maker is None:
        return
    report(progress, maker.missing.format(precision=precision_name(choice.dtype)))
    maker.make(bundle, choice, engines, progress)
