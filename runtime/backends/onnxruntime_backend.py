"""onnxruntime backend: the exported ONNX graphs on CUDA, DirectML, CoreML or the CPU.

The graphs are made by `instantrestore export --onnx` (export/onnx_export.py) and found in the
engine cache by bundle hash and precision. A Backend: torch tensors in, torch tensors out. On CUDA,
inputs and outputs are bound as torch device pointers (IO binding), so no host copies; the reference K/V of a profile are bound once while the same list object is passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import engine_cache
from ..errors import InstantRestoreError
from ..graphs import GRAPHS, input_names, kv_names, output_names, precision_dtype, precision_name
from . import Backend, BoundReferences, device_kind

log = logging.getLogger(__name__)

# Preference order when a device does not pin one.
PROVIDER_ORDER = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")
DEVICE_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "mps": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
NUMPY_TYPES = {torch.float32: np.float32, torch.float16: np.float16}


class OnnxRuntimeError(InstantRestoreError, RuntimeError):
    """onnxruntime is missing, or its graphs or execution provider are unavailable."""


class OnnxGraphNotFoundError(OnnxRuntimeError):
    """The bundle has not been exported to ONNX in the requested precision."""


def _ort():
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        raise OnnxRuntimeError(f"onnxruntime is not available ({type(exc).__name__}: {exc}); "
                               "install it with `pip install onnxruntime` (or onnxruntime-gpu)") from None
    return ort


def available_providers() -> list:
    try:
        return list(_ort().get_available_providers())
    except OnnxRuntimeError:
        return []


def choose_providers(device) -> list:
    """Execution providers for `device`, best first, always ending with the CPU as fallback.

    "auto" takes the first available of CUDA, DirectML, CoreML, CPU; "cuda[:i]", "dml[:i]",
    "coreml" and "cpu" pin one (an error if this onnxruntime build lacks it).
    """
    available = available_providers()
    text = str(device).lower()
    kind, _, index = text.partition(":")
    if kind == "auto":
        chosen = [p for p in PROVIDER_ORDER if p in available]
        return [(p, {}) for p in chosen] or [("CPUExecutionProvider", {})]
    if kind not in DEVICE_PROVIDERS:
        raise OnnxRuntimeError(f"onnxruntime cannot run on device {device!r}; use cpu, cuda, dml, coreml or auto")
    provider = DEVICE_PROVIDERS[kind]
    if provider not in available:
        hint = (" (install onnxruntime-gpu)" if kind == "cuda"
                else " (install onnxruntime-directml)" if provider.startswith("Dml") else "")
        raise OnnxRuntimeError(f"onnxruntime's {provider} is not available here{hint}; "
                               f"available: {', '.join(available)}")
    options = {}
    if provider in ("CUDAExecutionProvider", "DmlExecutionProvider"):
        options["device_id"] = int(index or 0)
    out = [(provider, options)]
    if provider != "CPUExecutionProvider":
        out.append(("CPUExecutionProvider", {}))
    return out


def onnx_ready(bundle, dtype=torch.float32, engines=None) -> tuple:
    """(True, '') when both graphs of `bundle` are exported in `dtype`'s precision in the engine cache
    `engines`; else (False, why)."""
    if not available_providers():
        return False, "onnxruntime is not installed"
    if engines is None:
        return False, "no engines folder given"
    precision = precision_name(dtype)
    folder = engine_cache.bundle_cache_dir(engines, bundle.bundle_id)
    if engine_cache.find_onnx_graphs(bundle.bundle_id, precision, folder) is None:
        return False, (f"no {precision} ONNX graphs for bundle {bundle.bundle_id[:12]} "
                       "(run `instantrestore export --onnx`)")
    return True, ""


def find_graphs(bundle, precision: str, folder) -> dict:
    graphs = engine_cache.find_onnx_graphs(bundle.bundle_id, precision, folder)
    if graphs is None:
        stale = []
        for g in GRAPHS:
            key = engine_cache.onnx_key(g, bundle.bundle_id, precision)
            stale += [f"{p.name}: {status} ({reason})"
                      for p, status, reason in engine_cache.inspect_slot(key, "onnx", folder)
                      if status != engine_cache.VALID]
        msg = f"no {precision} ONNX graphs for bundle {bundle.bundle_id[:12]} in {folder}"
        if stale:
            msg += "; not loading " + "; ".join(stale)
        dtype = "float16" if precision == "fp16" else "float32"
        raise OnnxGraphNotFoundError(msg + f"; run `instantrestore export --onnx --dtype {dtype}` to create them")
    return graphs


class _Session:
    """One InferenceSession plus the IO-binding state for device tensors."""

    def __init__(self, path: Path, providers: list, threads: Optional[int], io_binding: bool):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3  # errors only: the CPU fallback of shape ops logs warnings otherwise
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.provider = self.session.get_providers()[0]
        self.binding = self.session.io_binding() if io_binding else None
        self._keep: dict = {}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """The backend's own options (the keyword options `load` takes): `onnx_dir`, a folder of graphs to use
    instead of the engine cache's; `threads`, onnxruntime's intra-op thread count (None: its default);
    `io_binding`, bind torch tensors' memory directly (None: on CUDA, where it saves host copies)."""

    onnx_dir: Optional[Path] = None
    threads: Optional[int] = None
    io_binding: Optional[bool] = None


class OnnxRuntimeBackend(Backend):
    """A Backend running the exported graphs of `bundle` from the engine cache `engines` (or `options.onnx_dir`)."""

    name = "onnxruntime"
    rank = 20
    devices = ("cuda", "cpu")  # the ones "auto" tries (DirectML and CoreML: --backend onnxruntime --device dml)
    builds = "graphs"
    ready_reason = "ONNX graphs found"
    cpu_threads_option = "threads"

    @classmethod
    def usable(cls, device: str) -> tuple:
        if device_kind(device) == "cuda" and "CUDAExecutionProvider" not in available_providers():
            return False, "CUDAExecutionProvider not available"
        return True, ""

    @classmethod
    def built(cls, bundle, device: str, dtype: torch.dtype, engines) -> tuple:
        return onnx_ready(bundle, dtype, engines)

    @classmethod
    def diagnose(cls) -> list:
        providers = available_providers()
        if not providers:
            return [(False, "onnxruntime is not available", "pip install onnxruntime-gpu or onnxruntime")]
        accelerated = [p for p in providers if p in PROVIDER_ORDER[:-1]]
        step = ("" if accelerated
                else "for GPU inference install onnxruntime-gpu (NVIDIA) or onnxruntime-directml (Windows)")
        return [(bool(accelerated), "providers: " + ", ".join(providers), step)]

    @classmethod
    def load(cls, bundle, device: str, dtype: torch.dtype, engines=None, **options) -> "OnnxRuntimeBackend":
        return cls(bundle, engines, device=device, dtype=dtype, options=OnnxRuntimeOptions(**options))

    def __init__(self, bundle, engines=None, device="cpu", dtype=torch.float32,
                 options: OnnxRuntimeOptions = OnnxRuntimeOptions()):
        self.bundle = bundle
        self.precision = precision_name(dtype)
        self.dtype = precision_dtype(dtype)
        self.providers = choose_providers(device)
        main = self.providers[0][0]
        # Torch tensors live on the CUDA device with the CUDA provider, else on the CPU (DirectML and
        # CoreML take host memory through onnxruntime's own copies).
        if main == "CUDAExecutionProvider":
            self.device = torch.device("cuda", self.providers[0][1].get("device_id", 0))
        else:
            self.device = torch.device("cpu")
        self.num_layers = len(bundle.layer_shapes)
        folder = engine_cache.graph_folder(engines, bundle.bundle_id, options.onnx_dir)
        paths = find_graphs(bundle, self.precision, folder)
        self.paths = paths
        self.io_binding = self.device.type == "cuda" if options.io_binding is None else bool(options.io_binding)
        self._threads = options.threads
        # The enroller's session is opened on first use: a live session with a stored profile never needs it.
        self._sessions = {"restorer": _Session(paths["restorer"], self.providers, self._threads, self.io_binding)}
        expect_in = input_names("restorer", self.num_layers)
        got = self._sessions["restorer"].inputs
        if got != expect_in:
            raise OnnxRuntimeError(f"restorer graph {paths['restorer'].name} has inputs {got[:4]}..., expected "
                                   f"{expect_in[:4]}... for {self.num_layers} shared layers; export it again")
        self.provider = self._sessions["restorer"].provider
        log.info("onnxruntime: %s on %s (%s)", self.precision, self.provider, paths["restorer"].parent)
        self._references = BoundReferences(2 * self.num_layers)
        self._bound_feed: dict = {}

    # -- conversion helpers

    def _prep(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=self.device, dtype=self.dtype).contiguous()

    def _numpy(self, t: torch.Tensor) -> np.ndarray:
        return self._prep(t).numpy()  # shares memory on the CPU

    def _bind_torch(self, sess: _Session, name: str, t: torch.Tensor) -> None:
        t = self._prep(t)
        sess.binding.bind_input(name, self.device.type, self.device.index or 0, NUMPY_TYPES[self.dtype],
                                tuple(t.shape), t.data_ptr())
        sess._keep[name] = t  # the binding holds a raw pointer: keep the tensor alive

    def _run_bound(self, sess: _Session, out_shapes: dict) -> list:
        outs = []
        for name in sess.outputs:
            t = torch.empty(out_shapes[name], dtype=self.dtype, device=self.device)
            sess.binding.bind_output(name, self.device.type, self.device.index or 0, NUMPY_TYPES[self.dtype],
                                     tuple(t.shape), t.data_ptr())
            outs.append(t)
        if self.device.type == "cuda":
            # onnxruntime runs on its own stream: let torch's pending work finish first.
            torch.cuda.current_stream(self.device).synchronize()
        sess.session.run_with_iobinding(sess.binding)
        return outs

    def _bind_references(self, layer_inputs: list) -> None:
        """Bind a profile's K/V once, while the same list is passed."""
        if not self._references.changed(layer_inputs):
            return
        names = kv_names(self.num_layers)
        if self.io_binding:
            for name, t in zip(names, layer_inputs):
                self._bind_torch(self._sessions["restorer"], name, t)
            self._bound_feed = {}
        else:
            self._bound_feed = {name: self._numpy(t) for name, t in zip(names, layer_inputs)}

    # -- the interface

    @torch.inference_mode()
    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list:
        if "enroller" not in self._sessions:
            self._sessions["enroller"] = _Session(self.paths["enroller"], self.providers, self._threads,
                                                  self.io_binding)
        sess = self._sessions["enroller"]
        if self.io_binding:
            self._bind_torch(sess, "refs", refs)
            self._bind_torch(sess, "noise", noise)
            n = refs.shape[0]
            shapes = {name: (n, *self.bundle.layer_shapes[i // 2]) for i, name in enumerate(kv_names(self.num_layers))}
            return self._run_bound(sess, shapes)
        outs = sess.session.run(sess.outputs, {"refs": self._numpy(refs), "noise": self._numpy(noise)})
        return [torch.from_numpy(o) for o in outs]

    @torch.inference_mode()
    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list) -> torch.Tensor:
        sess = self._sessions["restorer"]
        self._bind_references(layer_inputs)
        if self.io_binding:
            self._bind_torch(sess, "images", images)
            self._bind_torch(sess, "noise", noise)
            return self._run_bound(sess, {"restored": tuple(images.shape)})[0]
        feed = dict(self._bound_feed)
        feed["images"] = self._numpy(images)
        feed["noise"] = self._numpy(noise)
        return torch.from_numpy(sess.session.run(output_names("restorer", self.num_layers), feed)[0])
