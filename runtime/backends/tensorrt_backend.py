"""TensorRT backend: runs cached fp16 engines on torch CUDA tensors, no host copies.

Engines are built ahead of time by `instantrestore export --tensorrt` (export/tensorrt_build.py)
and found in the engine cache (runtime/engine_cache.py) by a key of bundle hash, TensorRT version,
GPU name, compute capability, precision and shape profile. A stale or foreign plan is never
deserialised: loading fails with a message that says how to rebuild.

Execution uses the tensor API of TensorRT 10 and 11 (the same calls in both): input shapes via
`set_input_shape`, device pointers via `set_tensor_address`, and `execute_async_v3` on torch's current
CUDA stream, so the call orders correctly with the torch ops around it. A profile's reference K/V are
bound once and kept bound while the same list object is passed frame after frame.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Optional

import torch

from .. import engine_cache
from ..engine_cache import ArtifactKey, BuildTarget
from ..errors import InstantRestoreError
from ..graphs import DEFAULT_PROFILE, GRAPHS, ShapeProfile, input_names, output_names, precision_dtype, precision_name
from . import Backend, BoundReferences

log = logging.getLogger(__name__)

PLAN_EXT = "plan"
# The TensorRT majors this code is written and tested for (their recorded Python API surfaces are in
# tests/support/tensorrt_surface/).
MIN_TRT_MAJOR = 10
MAX_TRT_MAJOR = 11


class TensorRTError(InstantRestoreError, RuntimeError):
    """A TensorRT engine could not be loaded or run."""


class TensorRTUnavailableError(TensorRTError):
    """The tensorrt package or a CUDA GPU is missing."""


class EngineNotFoundError(TensorRTError):
    """No valid engine for this bundle, GPU, TensorRT version, precision and profile is cached."""


def trt_major(version) -> int:
    return int(str(version).split(".")[0])


def supported(version) -> bool:
    """Whether this code supports TensorRT `version` (majors MIN_TRT_MAJOR..MAX_TRT_MAJOR)."""
    return MIN_TRT_MAJOR <= trt_major(version) <= MAX_TRT_MAJOR


def support_note(version) -> str:
    """'' for a supported TensorRT version, else one line saying why not."""
    if supported(version):
        return ""
    if trt_major(version) < MIN_TRT_MAJOR:
        return f"TensorRT {version} is too old; version {MIN_TRT_MAJOR} or newer is required"
    return (f"TensorRT {version} is newer than this code supports ({MIN_TRT_MAJOR}.x to {MAX_TRT_MAJOR}.x); "
            f"if the build fails, install `tensorrt<{MAX_TRT_MAJOR + 1}`")


def import_tensorrt():
    """Import tensorrt or raise TensorRTUnavailableError with what to do. Too old a version is refused;
    a newer major than this code knows is tried, with a warning."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency
    except Exception as exc:  # ImportError, or a broken install failing to load its libraries
        raise TensorRTUnavailableError(
            "TensorRT is not available (import tensorrt failed: "
            f"{type(exc).__name__}: {exc}); install it from a checkout with `pip install -e '.[tensorrt]'` "
            "on a machine with an NVIDIA GPU, or use --backend onnxruntime or --backend torch"
        ) from None
    note = support_note(trt.__version__)
    if trt_major(trt.__version__) < MIN_TRT_MAJOR:
        raise TensorRTUnavailableError(note)
    if note:
        _warn_once(note)
    return trt


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning("%s", message)


def require_cuda(device=None) -> torch.device:
    """The CUDA device to use, or TensorRTUnavailableError when torch sees no GPU."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "TensorRT needs an NVIDIA GPU with CUDA, and torch sees none; "
            "use --backend onnxruntime or --backend torch on this machine"
        )
    dev = torch.device(device if device is not None else "cuda")
    if dev.type != "cuda":
        raise TensorRTUnavailableError(f"the TensorRT backend runs on a CUDA device, not {dev}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def tensorrt_usable() -> bool:
    """Whether TensorRT imports and torch sees a GPU, engines or not."""
    try:
        import_tensorrt()
    except TensorRTUnavailableError:
        return False
    return torch.cuda.is_available()


def engine_key(graph: str, bundle_id: str, precision, profile: ShapeProfile, target: BuildTarget) -> ArtifactKey:
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r} (expected one of {GRAPHS})")
    return engine_cache.trt_key(f"trt-{graph}", bundle_id, precision, profile, target)


def current_engine_keys(bundle_id: str, precision="fp16", profile=None, device=None) -> dict:
    """Keys for this machine (installed TensorRT, this GPU): {graph: ArtifactKey}."""
    trt = import_tensorrt()
    dev = require_cuda(device)
    name, cc = engine_cache.cuda_identity(dev)
    profile = profile or DEFAULT_PROFILE
    target = BuildTarget(trt.__version__, name, cc)
    return {g: engine_key(g, bundle_id, precision, profile, target) for g in GRAPHS}


def missing_engine_message(key: ArtifactKey, where, slot_report=()) -> str:
    msg = (f"no TensorRT {key.kind[4:]} engine for bundle {key.bundle_id[:12]} on {key.gpu_name} "
           f"(sm {key.compute_capability}, TensorRT {key.trt_version}, {key.precision}, profile "
           f"{key.profile.tag}) in {where}")
    bad = [f"{p.name}: {status} ({reason})" for p, status, reason in slot_report if status != engine_cache.VALID]
    if bad:
        msg += "; not loading " + "; ".join(bad)
    return msg + "; run `instantrestore export --tensorrt` to build it"


def find_engine(key: ArtifactKey, engines) -> Path:
    """Path of the valid plan for `key` in the engine cache `engines`, or EngineNotFoundError naming
    stale/foreign ones."""
    if engines is None:
        raise EngineNotFoundError("no engines folder given to look for TensorRT engines in")
    folder = engine_cache.bundle_cache_dir(engines, key.bundle_id)
    path = engine_cache.find_artifact(key, PLAN_EXT, folder)
    if path is None:
        raise EngineNotFoundError(missing_engine_message(key, folder, engine_cache.inspect_slot(key, PLAN_EXT, folder)))
    return path


def torch_dtype(trt, trt_dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.bfloat16: torch.bfloat16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
        trt.int8: torch.int8,
        trt.uint8: torch.uint8,
    }
    if trt_dtype not in table:
        raise TensorRTError(f"engine tensor type {trt_dtype} has no torch equivalent")
    return table[trt_dtype]


@functools.lru_cache(maxsize=None)
def tensorrt_logger(trt):
    """The ILogger (one per tensorrt module) that forwards TensorRT's log into Python logging."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            level = {
                trt.ILogger.INTERNAL_ERROR: logging.ERROR,
                trt.ILogger.ERROR: logging.ERROR,
                trt.ILogger.WARNING: logging.WARNING,
                trt.ILogger.INFO: logging.DEBUG,
            }.get(severity, logging.DEBUG)
            logging.getLogger("tensorrt").log(level, "%s", msg)

    return Logger()


class EngineRunner:
    """One deserialised engine with one execution context, run on torch tensors."""

    def __init__(self, plan: bytes, device: torch.device, what: str = "engine"):
        trt = import_tensorrt()
        self.trt = trt
        self.device = device
        self.what = what
        with self._device_scope():
            self.runtime = trt.Runtime(tensorrt_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise TensorRTError(f"TensorRT could not deserialise the {what} plan (built by another version?); "
                                    "run `instantrestore export --tensorrt` to rebuild it")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise TensorRTError(f"TensorRT could not create an execution context for the {what}")
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = torch_dtype(trt, self.engine.get_tensor_dtype(name))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            else:
                self.outputs.append(name)
        self._shapes: dict = {}
        self._addresses: dict = {}
        self._keep: dict = {}  # tensors whose addresses are bound: keep them alive

    def _device_scope(self):
        # TensorRT deserialises onto the current CUDA device.
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _stream_handle(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream

    def profile_shape(self, name: str) -> tuple:
        """(min, opt, max) shapes of an input in profile 0."""
        return tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))

    def bind_input(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Set shape and address of one input (converting dtype/layout/device if needed)."""
        want = self.dtypes[name]
        if tensor.dtype != want or tensor.device != self.device or not tensor.is_contiguous():
            tensor = tensor.to(device=self.device, dtype=want).contiguous()
        shape = tuple(tensor.shape)
        if self._shapes.get(name) != shape:
            if not self.context.set_input_shape(name, shape):
                lo, _, hi = self.profile_shape(name)
                raise TensorRTError(f"{self.what} input {name} shape {shape} is outside the engine's profile "
                                    f"{tuple(lo)}..{tuple(hi)}; rebuild with a wider profile")
            self._shapes[name] = shape
        self._set_address(name, tensor.data_ptr())
        self._keep[name] = tensor
        return tensor

    def _set_address(self, name: str, ptr: int) -> None:
        if self._addresses.get(name) == ptr:
            return
        if not self.context.set_tensor_address(name, ptr):
            self._addresses.pop(name, None)
            raise TensorRTError(f"TensorRT refused the device address of {self.what} tensor {name} "
                                "(see the tensorrt log); the engine may not match this bundle, rebuild it with "
                                "`instantrestore export --tensorrt`")
        self._addresses[name] = ptr

    def run(self) -> dict:
        """Allocate outputs for the bound input shapes and enqueue on torch's current stream."""
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TensorRTError(f"{self.what} output {name} shape {shape} is unresolved: an input is unbound")
            out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self._set_address(name, out.data_ptr())
            outs[name] = out
        # Torch's current stream: ordered after the ops that produced the inputs, before those that read outputs.
        if not self.context.execute_async_v3(self._stream_handle()):
            raise TensorRTError(f"TensorRT failed to enqueue the {self.what}")
        return outs


class TensorRTBackend(Backend):
    """A Backend running the TensorRT engines of `bundle` cached in the folder `engines`."""

    name = "tensorrt"
    rank = 10
    devices = ("cuda",)
    builds = "engines"
    ready_reason = "TensorRT engines found"

    @classmethod
    def require(cls, device) -> None:
        import_tensorrt()
        require_cuda(device)

    @classmethod
    def built(cls, bundle, device: str, dtype: torch.dtype, engines) -> tuple:
        return tensorrt_ready(bundle, dtype=dtype, device=device, engines=engines)  # TensorRT and a GPU too

    @classmethod
    def diagnose(cls) -> list:
        try:
            import tensorrt as trt  # noqa: PLC0415 - optional dependency
        except Exception as error:  # noqa: BLE001 - any failure means it is unusable
            reason = "not installed" if isinstance(error, ImportError) else f"does not load ({type(error).__name__})"
            return [(False, f"TensorRT {reason}: the fastest backend is unavailable",
                     "from a checkout: pip install -e '.[tensorrt]' on Linux or Windows with an NVIDIA GPU, then "
                     "`instantrestore export --tensorrt`")]
        note = support_note(trt.__version__)
        if note:
            return [(False, note, f"pip install 'tensorrt>={MIN_TRT_MAJOR},<{MAX_TRT_MAJOR + 1}'")]
        return [(True, f"TensorRT {trt.__version__} (supported: {MIN_TRT_MAJOR}.x to {MAX_TRT_MAJOR}.x)", "")]

    @classmethod
    def auto_builds(cls, device: str) -> bool:
        return tensorrt_usable()  # the fast path: build its engines once (minutes) rather than skip it

    @classmethod
    def load(cls, bundle, device: str, dtype: torch.dtype, engines=None, **options) -> "TensorRTBackend":
        return cls(bundle, engines, device=device, dtype=dtype, **options)

    def __init__(self, bundle, engines, device="cuda", dtype=torch.float16, profile: Optional[ShapeProfile] = None):
        self.trt = import_tensorrt()
        self.device = require_cuda(device)
        self.bundle = bundle
        self.precision = precision_name(dtype)
        self.dtype = precision_dtype(dtype)
        self.profile = profile or DEFAULT_PROFILE
        self.keys = current_engine_keys(bundle.bundle_id, self.precision, self.profile, self.device)
        self.num_layers = len(bundle.layer_shapes)
        # Both plans must exist now (so a missing one is reported at load), but the enroller is only
        # deserialised on first use: a live session with a stored profile never needs its GPU memory.
        self._paths = {graph: find_engine(self.keys[graph], engines) for graph in GRAPHS}
        self._runners = {}
        self._runner("restorer")
        self._references = BoundReferences(2 * self.num_layers)

    def _runner(self, graph: str) -> EngineRunner:
        if graph not in self._runners:
            path = self._paths[graph]
            log.info("tensorrt: loading %s engine %s", graph, path)
            runner = EngineRunner(path.read_bytes(), self.device, what=graph)
            self._check_io(graph, runner)
            self._runners[graph] = runner
        return self._runners[graph]

    def _check_io(self, graph: str, r: EngineRunner) -> None:
        inputs, outputs = input_names(graph, self.num_layers), output_names(graph, self.num_layers)
        if graph == "restorer":
            if sorted(r.inputs) != sorted(inputs) or r.outputs != outputs:
                raise TensorRTError(f"restorer engine inputs {r.inputs} / outputs {r.outputs} do not match the bundle "
                                    f"({self.num_layers} shared layers); "
                                    "rebuild with `instantrestore export --tensorrt`")
        elif sorted(r.inputs) != sorted(inputs) or len(r.outputs) != len(outputs):
            raise TensorRTError(f"enroller engine inputs {r.inputs} / outputs {r.outputs} do not match the bundle; "
                                "rebuild with `instantrestore export --tensorrt`")

    @property
    def max_references(self) -> int:
        return self._runners["restorer"].profile_shape("k0")[2][0]

    @property
    def max_batch(self) -> int:
        return self._runners["restorer"].profile_shape("images")[2][0]

    @torch.inference_mode()
    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list:
        r = self._runner("enroller")
        step = r.profile_shape("refs")[2][0]
        if refs.shape[0] > step:  # references are independent: run them in engine-sized chunks
            parts = [self.enroll(refs[i:i + step], noise[i:i + step]) for i in range(0, refs.shape[0], step)]
            return [torch.cat(ts) for ts in zip(*parts)]
        r.bind_input("refs", refs)
        r.bind_input("noise", noise)
        outs = r.run()
        return [outs[n] for n in output_names("enroller", self.num_layers)]

    @torch.inference_mode()
    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list) -> torch.Tensor:
        r = self._runners["restorer"]
        step = self.max_batch
        if images.shape[0] > step:  # frames are independent: run larger batches in engine-sized chunks
            return torch.cat([self.restore(images[i:i + step], noise[i:i + step], layer_inputs)
                              for i in range(0, images.shape[0], step)])
        if self._references.changed(layer_inputs):
            # A new profile: bind its K/V once; later frames only rebind images and noise.
            for name, t in zip(input_names("restorer", self.num_layers)[2:], layer_inputs):
                r.bind_input(name, t)
        r.bind_input("images", images)
        r.bind_input("noise", noise)
        return r.run()["restored"]


def tensorrt_ready(bundle, dtype=torch.float16, device=None, profile=None, engines=None) -> tuple:
    """(True, '') when TensorRT, a GPU and valid engines for `bundle` in `engines` exist; else (False, why)."""
    try:
        keys = current_engine_keys(bundle.bundle_id, precision_name(dtype), profile, device)
        for key in keys.values():
            find_engine(key, engines)
    except (TensorRTError, engine_cache.ArtifactError) as exc:
        return False, str(exc)
    return True, ""
