"""Which backend a command runs on, and what it needs built first (ONNX graphs, TensorRT engines)."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from instantrestore.runtime.artifacts import precision_dtype, precision_name

from .errors import PluginError
from .progress import say

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")


@dataclasses.dataclass
class EngineChoice:
    backend: str
    device: str
    dtype: object  # torch dtype
    reason: str = ""


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _tensorrt_usable() -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def choose_engine(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None) -> EngineChoice:
    """Resolve --backend/--device/--dtype into one concrete choice (nothing is built or loaded)."""
    import torch

    if backend not in BACKEND_CHOICES:
        raise PluginError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
    if dtype is not None:
        dtype = precision_dtype(dtype)
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PluginError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} "
                          "(`instantrestore doctor` says what is missing)")
    if backend == "tensorrt":
        from instantrestore.runtime.backend_tensorrt import import_tensorrt, require_cuda

        # said first, before a build is announced or a camera opened
        import_tensorrt()
        require_cuda(device)
        return EngineChoice("tensorrt", device or "cuda", torch.float16, "asked for")
    explicit_device = device
    device = device or default_device()
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    if backend in ("torch", "onnxruntime"):
        return EngineChoice(backend, device, dtype, "asked for")
    # auto
    if explicit_device is not None and not str(explicit_device).startswith("cuda"):
        from instantrestore.runtime.backend_onnxruntime import onnx_ready

        ok, why = onnx_ready(bundle, dtype)
        if ok and explicit_device == "cpu":
            return EngineChoice("onnxruntime", "cpu", dtype, "ONNX graphs found")
        return EngineChoice("torch", explicit_device, dtype, why or "device given")
    if _tensorrt_usable():
        from instantrestore.runtime.backend_tensorrt import tensorrt_ready

        gpu = explicit_device or "cuda"
        ok, _ = tensorrt_ready(bundle, device=gpu)
        # TensorRT is the fast path: build its engines once (minutes) rather than skip it.
        return EngineChoice("tensorrt", gpu, torch.float16, "TensorRT and a GPU found" if ok else "build")
    from instantrestore.runtime.backend_tensorrt import choose_auto_backend

    name, dev, dt, reason = choose_auto_backend(bundle)
    return EngineChoice(name, str(dev), dt, reason)


def ensure_artifacts(bundle, choice: EngineChoice, progress=say) -> None:
    """Export the ONNX graphs or build the TensorRT engines `choice` needs, when they are missing."""
    if choice.backend == "onnxruntime":
        from instantrestore.runtime.backend_onnxruntime import onnx_ready

        ok, _ = onnx_ready(bundle, choice.dtype)
        if not ok:
            from instantrestore.export.onnx_export import export_onnx

            progress(f"no {precision_name(choice.dtype)} ONNX graphs for this bundle yet; exporting them once")
            export_device = "cuda" if str(choice.device).startswith("cuda") else "cpu"
            export_onnx(bundle.path, dtype=precision_name(choice.dtype), device=export_device, progress=progress)
    elif choice.backend == "tensorrt":
        from instantrestore.runtime.backend_tensorrt import tensorrt_ready

        ok, _ = tensorrt_ready(bundle, device=choice.device)
        if not ok:
            from instantrestore.export.tensorrt_build import build_engines

            progress("no TensorRT engines for this bundle and GPU yet; building them once (this takes minutes)")
            build_engines(bundle.path, precision="fp16", progress=progress, device=choice.device)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:  # Windows, macOS
        return os.cpu_count() or 1


def use_cpu_threads(choice: EngineChoice) -> dict:
    """How a run on the CPU shares the cores, decided here for every backend: the model's intra-op
    threads (torch's, or onnxruntime's session) get all cores but one, which is left to the pipeline's
    own threads (decode, track, composite, encode), and OpenCV works single-threaded inside those.
    Oversubscribed, torch's OpenMP workers wait for each other whenever a core is taken: a 48-frame
    video on the test miniature, 2-core machine, one core busy elsewhere, took 13 to 34 s with torch's
    default of 2 threads and 4 to 6 s like this (README, Performance). Returns the backend's own options (onnxruntime's thread count); a GPU run changes nothing."""
    if not str(choice.device).startswith("cpu"):
        return {}
    import cv2
    import torch

    model_threads = max(1, usable_cores() - 1)
    torch.set_num_threads(model_threads)
    cv2.setNumThreads(1)
    return {"threads": model_threads} if choice.backend == "onnxruntime" else {}


def load_engine(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None, progress=say):
    """A Restorer for `bundle` on the chosen backend, building what that backend needs first."""
    from instantrestore.runtime import load_restorer

    choice = choose_engine(bundle, backend, device, dtype)
    if choice.backend == "tensorrt" and choice.reason == "build":
        try:
            ensure_artifacts(bundle, choice, progress)
            choice.reason = "TensorRT engines built"
        except Exception as error:  # noqa: BLE001 - auto falls back instead of failing the job
            progress(f"TensorRT engine build failed ({' '.join(str(error).split())[:200]}); using another backend")
            from instantrestore.runtime.backend_tensorrt import choose_auto_backend

            name, dev, dt, reason = choose_auto_backend(bundle)
            choice = EngineChoice(name, str(dev), dt, reason)
    else:
        ensure_artifacts(bundle, choice, progress)
    note = ""
    if backend == "auto" and not str(choice.device).startswith("cuda") and choice.backend != "tensorrt":
        note = "; no GPU backend is usable here (`instantrestore doctor` says why)"
    progress(f"backend: {choice.backend} on {choice.device} ({precision_name(choice.dtype)}){note}")
    options = use_cpu_threads(choice)
    return load_restorer(bundle.path, backend=choice.backend, device=choice.device, dtype=choice.dtype, **options)
