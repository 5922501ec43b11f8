"""What a backend choice needs made before it can load: the ONNX graphs (onnxruntime) or the TensorRT engines,
exported or built into an engines folder. The choice itself is runtime's (backends.select); making is export's."""

from __future__ import annotations

from instantrestore.runtime.backends import Choice
from instantrestore.runtime.graphs import precision_name

from .checkpoint import report


def build_for(bundle, choice: Choice, engines, progress=None) -> None:
    """Export the ONNX graphs or build the TensorRT engines `choice` needs into `engines`, when it says it
    needs them (choice.build); nothing otherwise."""
    if not choice.build:
        return
    precision = precision_name(choice.dtype)
    if choice.backend == "onnxruntime":
        from .onnx_export import export_onnx

        report(progress, f"no {precision} ONNX graphs for this bundle yet; exporting them once")
        export_device = choice.device if str(choice.device).startswith("cuda") else "cpu"  # cuda:1 stays cuda:1
        export_onnx(bundle.path, engines=engines, dtype=precision, device=export_device, progress=progress)
    elif choice.backend == "tensorrt":
        from .tensorrt_build import build_engines

        report(progress, "no TensorRT engines for this bundle and GPU yet; building them once (this takes minutes)")
        build_engines(bundle.path, engines=engines, precision=precision, progress=progress, device=choice.device)
