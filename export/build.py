"""What a backend choice needs made before it can load: the ONNX graphs (onnxruntime) or the TensorRT engines,
exported or built into an engines folder. The choice itself is runtime's (backends.select); making is export's."""

from __future__ import annotations

from instantrestore.runtime.backends import Choice
from instantrestore.runtime.graphs import precision_name

from .checkpoint import report


def make_for(bundle, choice: Choice, engines, progress=None) -> dict:
    """Export the ONNX graphs or build the TensorRT engines `choice` runs on into `engines`, reusing valid ones;
    returns {graph: path} ({} for a backend that needs nothing made)."""
    precision = precision_name(choice.dtype)
    if choice.backend == "onnxruntime":
        from .onnx_export import export_onnx

        export_device = choice.device if str(choice.device).startswith("cuda") else "cpu"  # cuda:1 stays cuda:1
        return export_onnx(bundle.path, engines=engines, dtype=precision, device=export_device, progress=progress)
    if choice.backend == "tensorrt":
        from .tensorrt_build import build_engines

        return build_engines(bundle.path, engines=engines, precision=precision, progress=progress,
                             device=choice.device)
    return {}


def build_for(bundle, choice: Choice, engines, progress=None) -> None:
    """make_for, when `choice` says what it needs is missing (choice.build); nothing otherwise."""
    if not choice.build:
        return
    if choice.backend == "onnxruntime":
        report(progress, f"no {precision_name(choice.dtype)} ONNX graphs for this bundle yet; exporting them once")
    elif choice.backend == "tensorrt":
        report(progress, "no TensorRT engines for this bundle and GPU yet; building them once (this takes minutes)")
    make_for(bundle, choice, engines, progress)
