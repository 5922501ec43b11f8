"""The backends that run a bundle's two networks (torch, onnxruntime, TensorRT): the one registry of their
names, the interface they share, the helper that keeps a profile's K/V bound, and `select`, the one choice of
backend, device and dtype that the API, the command line, the panel and bench all use."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Optional, Protocol, runtime_checkable

import torch


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    target: str  # "module:Class", imported on first use so a backend's optional dependencies stay optional
    builds: Optional[str]  # what export makes before it can run: "graphs", "engines", or None


# Fastest first: the order `select` tries them in and the command line lists them in.
BACKENDS = {
    "tensorrt": BackendEntry("instantrestore.runtime.backends.tensorrt_backend:TensorRTBackend", "engines"),
    "onnxruntime": BackendEntry("instantrestore.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend", "graphs"),
    "torch": BackendEntry("instantrestore.runtime.backends.torch_backend:TorchBackend", None),
}
CHOICES = ("auto", *BACKENDS)  # --backend of every command


@runtime_checkable
class Backend(Protocol):
    """What Restorer needs of a backend. Tensors are torch tensors; images (B,3,S,S) and noise (B,L,s,s) in
    the backend's dtype; K/V as runtime/graphs.py's kv_names order them."""

    name: str
    device: torch.device
    dtype: torch.dtype

    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        """The reference K/V of N reference crops: [k0, v0, k1, v1, ...], each (N, T_i, C_i)."""

    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list[torch.Tensor]) -> torch.Tensor:
        """Restored crops for `images`, given a profile's K/V as Profile.layer_inputs prepares them."""


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(CHOICES)}")
    module, cls = BACKENDS[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


class BoundReferences:
    """The profile K/V a backend holds bound as its graph's static inputs. The caller (Restorer) passes the
    same list object for as long as a profile is in use; `changed` tells a backend when it must bind again."""

    def __init__(self, count: int):
        self.count = count  # 2 per shared layer
        self._source: Optional[list] = None
        self._pointers: list[int] = []

    def changed(self, layer_inputs: list[torch.Tensor]) -> bool:
        """True when `layer_inputs` are not the ones bound (a new profile, or tensors that moved); they count as
        bound from now on."""
        if len(layer_inputs) != self.count:
            raise ValueError(f"expected {self.count} K/V tensors, got {len(layer_inputs)}")
        pointers = [t.data_ptr() for t in layer_inputs]
        if layer_inputs is self._source and pointers == self._pointers:
            return False
        self._source, self._pointers = layer_inputs, pointers
        return True


from .selection import BackendError, Choice, select  # noqa: E402 - selection imports the registry above

__all__ = ["BACKENDS", "CHOICES", "Backend", "BackendError", "BoundReferences", "Choice", "backend_class", "select"]
