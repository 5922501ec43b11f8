"""`select`: the one decision of backend, device and dtype, for the API (load_restorer), the command line,
the panel and bench, read from the registry of backends. Nothing is built or loaded here; the choice says
what export must make first."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..errors import InstantRestoreError
from ..graphs import precision_dtype
from . import BACKENDS, CHOICES


class BackendError(InstantRestoreError, ValueError):
    """An unknown backend, or a device this machine does not have."""


@dataclasses.dataclass
class Choice:
    backend: str
    device: str
    dtype: torch.dtype
    build: bool = False  # what the backend builds (its ONNX graphs, TensorRT engines) must be made first, by export
    reasons: list[str] = dataclasses.field(default_factory=list)  # why, and why not the faster ones

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def select(bundle, backend: str = "auto", device: Optional[str] = None, dtype=None, engines=None,
           can_build: bool = False) -> Choice:
    """Resolve a backend name ("auto" or one of BACKENDS), a device ("cuda", "cuda:1", "cpu"; None: cuda when
    torch sees a GPU) and a dtype (None: float16 on CUDA, float32 elsewhere; "auto" on a GPU takes float16)
    into one Choice.

    `engines` is the folder of ONNX graphs and TensorRT engines (see engine_cache.py). "auto" takes, in the
    registry's rank order, the first backend that is ready on the GPU (fp16), then on the CPU (fp32): TensorRT,
    onnxruntime on CUDA (its provider and graphs there), torch on CUDA, onnxruntime on the CPU (graphs there),
    torch on the CPU; with a device other than CUDA given, the first ready there. `can_build`: a caller that
    can have export build (the plugin) gets a backend that says building is worth it (TensorRT, whenever it
    imports and a GPU exists) with `build` set; without it TensorRT is chosen only when its engines exist.
    """
    if backend not in CHOICES:
        raise BackendError(f"unknown backend {backend!r}; choose one of: {', '.join(CHOICES)}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        dtype = precision_dtype(dtype)
    if backend != "auto":
        BACKENDS[backend].require(device)  # said first, before a build is announced or a camera opened
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} "
                           "(`instantrestore doctor` says what is missing)")
    if backend != "auto":
        return _asked_for(BACKENDS[backend], bundle, device or _default_device_of(BACKENDS[backend]), dtype, engines)
    if device is not None and not str(device).startswith("cuda"):
        candidates = [(cls, device, dtype or default_dtype(device)) for cls in BACKENDS.values() if cls.runs_on(device)]
        return _first_ready(bundle, candidates, engines, can_build, labelled=False)
    gpu = device or "cuda"
    candidates = [(cls, gpu, torch.float16) for cls in BACKENDS.values() if cls.runs_on(gpu)]
    candidates += [(cls, "cpu", torch.float32) for cls in BACKENDS.values() if cls.runs_on("cpu")]
    return _first_ready(bundle, candidates, engines, can_build, labelled=True)


def _default_device_of(cls) -> str:
    """The machine's default device where the backend runs on it, else the first it declares (TensorRT: cuda)."""
    device = default_device()
    return device if cls.runs_on(device) else cls.devices[0]


def _asked_for(cls, bundle, device: str, dtype, engines) -> Choice:
    dtype = dtype or default_dtype(device)
    built, why = cls.built(bundle, device, dtype, engines)
    if not built and cls.builds is None:
        raise BackendError(f"--backend {cls.name} cannot run here: {why}")
    return Choice(cls.name, device, dtype, build=not built, reasons=["asked for"])


def _first_ready(bundle, candidates: list, engines, can_build: bool, labelled: bool) -> Choice:
    """The first of `candidates` ((backend class, device, dtype), best first) that is ready, or that `can_build`
    and says building is worth it; the reasons name those passed over (`labelled`: with backend and device)."""
    reasons = []
    for cls, device, dtype in candidates:
        ready, why = cls.ready(bundle, device, dtype, engines)
        if ready:
            return Choice(cls.name, device, dtype, reasons=reasons or [cls.ready_reason])
        said = f"{cls.label(device)}: {why}" if labelled else why
        if can_build and cls.builds is not None and cls.auto_builds(device):
            return Choice(cls.name, device, dtype, build=True, reasons=[*reasons, said])
        reasons.append(said)
    raise BackendError("no backend can run here: " + "; ".join(reasons))


__all__ = ["BackendError", "Choice", "default_device", "default_dtype", "select"]
