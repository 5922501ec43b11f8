"""The backends that run a bundle's two networks (TensorRT, onnxruntime, torch): the contract every backend
class follows (`Backend`), the one registry of them (`register`, `BACKENDS`, `CHOICES`), the helper that keeps
a profile's K/V bound, and `select`, the one choice of backend, device and dtype that the API, the command
line, the panel and bench all use.

A new backend is one module here with a `Backend` subclass, and one `register(...)` call (below for the
built-in ones); `select`, `load_restorer`, every `--backend`, doctor and export's build step read the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch


def device_kind(device) -> str:
    """The kind a device string names ("cuda" of "cuda:1"), whether or not torch knows it (e.g. "dml")."""
    return str(device).split(":")[0].lower()


class Backend:
    """What a backend declares (class attributes and class methods, read before anything is loaded) and what
    Restorer needs of a loaded one (`enroll`, `restore`). Tensors are torch tensors; images (B,3,S,S) and noise
    (B,L,s,s) in the backend's dtype; K/V as runtime/graphs.py's kv_names order them."""

    name: str = ""
    rank: int = 100  # "auto" tries backends in rank order, lowest first (on a GPU, then on the CPU)
    devices: Optional[tuple] = None  # the device kinds "auto" tries it on ("cuda", "cpu"); None: any
    # What export must make before it can load, named by the kind in export's table of makers (export/build.py):
    # "graphs" (ONNX), "engines" (TensorRT), or None for nothing.
    builds: Optional[str] = None
    ready_reason: str = ""  # what "auto" says when it is the first backend tried and is ready
    cpu_threads_option: Optional[str] = None  # its load option taking the model's CPU thread count, if any
    compile_option: Optional[str] = None  # its load option that compiles the model (bench --compile), if any

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def require(cls, device: Optional[str]) -> None:
        """Raise an InstantRestoreError saying what is missing when asked for explicitly on `device` (None: the
        default) where it cannot run at all; said before anything is built or opened."""

    @classmethod
    def usable(cls, device: str) -> tuple:
        """(True, '') when it can run on `device` on this machine (its library, provider, GPU); else (False, why)."""
        return True, ""

    @classmethod
    def built(cls, bundle, device: str, dtype: torch.dtype, engines) -> tuple:
        """(True, '') when what it `builds` for `bundle` in `dtype` is in the engine cache `engines` (or it needs
        nothing); else (False, why)."""
        return True, ""

    @classmethod
    def ready(cls, bundle, device: str, dtype: torch.dtype, engines) -> tuple:
        """usable, then built: whether "auto" can load it now, and why not."""
        usable, why = cls.usable(device)
        return cls.built(bundle, device, dtype, engines) if usable else (False, why)

    @classmethod
    def auto_builds(cls, device: str) -> bool:
        """Whether "auto", for a caller that can build, takes it and has export build what it lacks (worth the
        wait) rather than try the next backend."""
        return False

    @classmethod
    def diagnose(cls) -> list:
        """What `doctor` says of it on this machine: (ok, detail, next step) tuples; [] for nothing to say."""
        return []

    @classmethod
    def label(cls, device: str) -> str:
        """How "auto"'s reasons name it on `device`."""
        if cls.devices is not None and len(cls.devices) == 1:
            return cls.name
        return f"{cls.name}-{device_kind(device)}"

    @classmethod
    def runs_on(cls, device: str) -> bool:
        return cls.devices is None or device_kind(device) in cls.devices

    @classmethod
    def load(cls, bundle, device: str, dtype: torch.dtype, engines=None, **options) -> "Backend":
        """The loaded backend; `options` are its own (torch: cuda_graph, compile)."""
        return cls(bundle, device=device, dtype=dtype, **options)

    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        """The reference K/V of N reference crops: [k0, v0, k1, v1, ...], each (N, T_i, C_i)."""
        raise NotImplementedError

    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list[torch.Tensor]) -> torch.Tensor:
        """Restored crops for `images`, given a profile's K/V as Profile.layer_inputs prepares them."""
        raise NotImplementedError


BACKENDS: dict[str, type] = {}  # name -> Backend class, in rank order


def register(cls: type) -> type:
    """Add a Backend class to the registry (kept in rank order); returns it, so it works as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Backend) and cls.name):
        raise TypeError(f"{cls!r} is not a named Backend subclass")
    ranked = sorted({**BACKENDS, cls.name: cls}.items(), key=lambda item: item[1].rank)
    BACKENDS.clear()
    BACKENDS.update(ranked)
    return cls


class BackendChoices(Sequence):
    """The names every --backend takes: "auto" and the registered backends, read each time they are used."""

    def _names(self) -> tuple:
        return ("auto", *BACKENDS)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and self._names() == tuple(other)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return repr(self._names())


CHOICES = BackendChoices()  # --backend of every command


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(CHOICES)}")
    return BACKENDS[name]


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


# The modules below import the contract above. Their optional libraries (tensorrt, onnxruntime) are imported
# only when a backend checks or loads.
from .selection import BackendError, Choice, select  # noqa: E402
from .onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from .tensorrt_backend import TensorRTBackend  # noqa: E402
from .torch_backend import TorchBackend  # noqa: E402

register(TensorRTBackend)
register(OnnxRuntimeBackend)
register(TorchBackend)

__all__ = ["BACKENDS", "CHOICES", "Backend", "BackendError", "BoundReferences", "Choice", "backend_class",
           "device_kind", "register", "select"]
