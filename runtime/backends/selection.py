"""`select`: the one decision of backend, device and dtype, for the API (load_restorer), the command line,
the panel and bench. Nothing is built or loaded here; the choice says what export must make first."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..errors import InstantRestoreError
from ..graphs import precision_dtype
from . import CHOICES


class BackendError(InstantRestoreError, ValueError):
    """An unknown backend, or a device this machine does not have."""


@dataclasses.dataclass
class Choice:
    backend: str
    device: str
    dtype: torch.dtype
    build: bool = False  # its ONNX graphs or TensorRT engines must be made first (by export)
    reasons: list[str] = dataclasses.field(default_factory=list)  # why, and why not the faster ones

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def select(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None, engines=None,
           can_build: bool = False) -> Choice:
    """Resolve a backend name ("auto" or one of BACKENDS), a device ("cuda", "cuda:1", "cpu"; None: cuda when
    torch sees a GPU) and a dtype (None: float16 on CUDA, float32 elsewhere; "auto" on a GPU takes float16)
    into one Choice.

    `engines` is the folder of ONNX graphs and TensorRT engines (see engine_cache.py). "auto" takes the first
    that is ready of: TensorRT, onnxruntime on CUDA (its provider and graphs there), torch on CUDA,
    onnxruntime on the CPU (graphs there), torch on the CPU. `can_build`: a caller that can have export build
    the engines (the plugin) gets TensorRT whenever it imports and a GPU exists, with `build` set; without
    it TensorRT is chosen only when its engines exist.
    """
    if backend not in CHOICES:
        raise BackendError(f"unknown backend {backend!r}; choose one of: {', '.join(CHOICES)}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        dtype = precision_dtype(dtype)
    if backend == "tensorrt":
        from .tensorrt_backend import import_tensorrt, require_cuda, tensorrt_ready

        import_tensorrt()  # said first, before a build is announced or a camera opened
        require_cuda(device)
        dtype = dtype or torch.float16
        ready, _ = tensorrt_ready(bundle, dtype=dtype, device=device, engines=engines)
        return Choice("tensorrt", device or "cuda", dtype, build=not ready, reasons=["asked for"])
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} "
                           "(`instantrestore doctor` says what is missing)")
    explicit_device = device
    device = device or default_device()
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    if backend == "torch":
        return Choice("torch", device, dtype, reasons=["asked for"])
    from .onnxruntime_backend import onnx_ready

    if backend == "onnxruntime":
        ready, _ = onnx_ready(bundle, dtype, engines)
        return Choice("onnxruntime", device, dtype, build=not ready, reasons=["asked for"])
    if explicit_device is not None and not str(explicit_device).startswith("cuda"):
        ready, why = onnx_ready(bundle, dtype, engines)
        if ready and explicit_device == "cpu":
            return Choice("onnxruntime", "cpu", dtype, reasons=["ONNX graphs found"])
        return Choice("torch", explicit_device, dtype, reasons=[why or "device given"])
    return _first_ready(bundle, explicit_device or "cuda", engines, can_build)


def _first_ready(bundle, gpu: str, engines, can_build: bool) -> Choice:
    """backend "auto" where no device or a CUDA one is given; `gpu` is the CUDA device to use."""
    from .onnxruntime_backend import available_providers, onnx_ready
    from .tensorrt_backend import tensorrt_ready, tensorrt_usable

    reasons = []
    ready, why = tensorrt_ready(bundle, device=gpu, engines=engines)
    if ready:
        return Choice("tensorrt", gpu, torch.float16, reasons=["TensorRT engines found"])
    if can_build and tensorrt_usable():
        # TensorRT is the fast path: build its engines once (minutes) rather than skip it.
        return Choice("tensorrt", gpu, torch.float16, build=True, reasons=[f"tensorrt: {why}"])
    reasons.append(f"tensorrt: {why}")
    if "CUDAExecutionProvider" in available_providers():
        ready, why = onnx_ready(bundle, torch.float16, engines)
        if ready:
            return Choice("onnxruntime", gpu, torch.float16, reasons=reasons)
        reasons.append(f"onnxruntime-cuda: {why}")
    else:
        reasons.append("onnxruntime-cuda: CUDAExecutionProvider not available")
    if torch.cuda.is_available():
        return Choice("torch", gpu, torch.float16, reasons=reasons)
    reasons.append("torch-cuda: no CUDA GPU")
    ready, why = onnx_ready(bundle, torch.float32, engines)
    if ready:
        return Choice("onnxruntime", "cpu", torch.float32, reasons=reasons)
    reasons.append(f"onnxruntime-cpu: {why}")
    return Choice("torch", "cpu", torch.float32, reasons=reasons)


__all__ = ["BackendError", "Choice", "default_device", "select"]
