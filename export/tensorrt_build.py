"""Build TensorRT engines from the exported ONNX graphs (TensorRT 10 and 11 Python API).

`build_engine` turns one ONNX file into a serialized plan (parser, optimisation profile, timing
cache, progress). Networks are always strongly typed, as TensorRT 11 requires and 10 recommends:
precision comes from the graph (the fp16 export keeps fp32 where fp16 would overflow), never from
builder flags. `build_engines` does the export stage for a bundle: finds or exports the ONNX graphs,
builds the restorer and enroller plans for this GPU and TensorRT version unless valid ones are
cached, removes stale ones, and writes atomically into the engine cache.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..runtime import engine_cache
from ..runtime.backends.tensorrt_backend import (
    PLAN_EXT,
    TensorRTError,
    TensorRTUnavailableError,
    engine_key,
    import_tensorrt,
    require_cuda,
    tensorrt_logger,
)
from ..runtime.files import atomic_write_bytes
from ..runtime.graphs import DEFAULT_PROFILE, GRAPHS, ShapeProfile, precision_name
from .progress import report

Progress = Optional[Callable[[str], None]]

__all__ = ["build_engine", "build_engines", "EngineBuildSettings", "TensorRTBuildError", "TensorRTUnavailableError",
           "profile_shapes"]


class TensorRTBuildError(TensorRTError):
    """The ONNX parser or the TensorRT builder failed."""


def _make_progress_monitor(trt, progress: Progress, min_interval: float = 2.0):
    """An IProgressMonitor that reports top-level phases and throttled step counts as text."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT may call from several threads
            self._steps: dict = {}
            self._parents: dict = {}
            self._last = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                self._steps[phase_name] = num_steps
                self._parents[phase_name] = parent_phase
                depth = self._depth(phase_name)
            if depth <= 1:
                report(progress, f"tensorrt: {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            with self._lock:
                top = self._depth(phase_name) == 0
                due = now - self._last >= min_interval
                if top and due:
                    self._last = now
            if top and due:
                report(progress, f"tensorrt: {phase_name} {step + 1}/{self._steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                self._steps.pop(phase_name, None)
                self._parents.pop(phase_name, None)

        def _depth(self, name):
            d, seen = 0, set()
            while self._parents.get(name) and name not in seen:
                seen.add(name)
                name = self._parents[name]
                d += 1
            return d

    return Monitor()


def profile_shapes(bundle, graph: str, profile: ShapeProfile) -> dict:
    """{input name: (min, opt, max)} for one graph of `bundle` under `profile`."""
    return profile.input_shapes(bundle, graph)


def build_engine(
    onnx_path,
    shapes: dict,
    *,
    timing_cache_path=None,
    workspace_bytes: Optional[int] = None,
    progress: Progress = None,
) -> bytes:
    """Parse `onnx_path` into a strongly typed network, build a plan with one optimisation profile and
    return its bytes. The engine's precision is the graph's own (an fp16 graph gives an fp16 engine).

    shapes: {input name: (min, opt, max)} covering every dynamic input. The timing cache at
    `timing_cache_path` is read if present and written back atomically after the build.
    """
    trt = import_tensorrt()
    require_cuda()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise TensorRTBuildError(f"ONNX graph {onnx_path} does not exist; run `instantrestore export --onnx` first")
    logger = tensorrt_logger(trt)
    builder = trt.Builder(logger)
    # The flag's bit moved between majors (1 in 10, 0 in 11, where it is the only mode): take it from the enum.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    report(progress, f"tensorrt: parsing {onnx_path.name}")
    # parse_from_file resolves external data next to the model.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTBuildError(f"TensorRT's ONNX parser rejected {onnx_path.name}: " + " | ".join(errors[:5]))

    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    _add_profile(builder, network, config, shapes, onnx_path.name)
    _attach_timing_cache(config, timing_cache_path)

    monitor = None
    if progress is not None:
        monitor = _make_progress_monitor(trt, progress)
        config.progress_monitor = monitor

    report(progress, f"tensorrt: building {onnx_path.name} (strongly typed: precision from the graph); "
                     "this takes minutes")
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)  # IHostMemory, or None on failure
    if plan is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path.name} (see the tensorrt log)")
    report(progress, f"tensorrt: built {onnx_path.name} in {time.monotonic() - t0:.0f} s")

    if timing_cache_path is not None:
        atomic_write_bytes(timing_cache_path, bytes(config.get_timing_cache().serialize()))
    del monitor
    return bytes(plan)


def _add_profile(builder, network, config, shapes: dict, graph_name: str) -> None:
    """One optimisation profile covering every network input, added to `config`."""
    profile = builder.create_optimization_profile()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [n for n in names if n not in shapes]
    if missing:
        raise TensorRTBuildError(f"no profile shapes given for inputs {missing} of {graph_name}")
    for name in names:
        lo, opt, hi = (tuple(int(d) for d in s) for s in shapes[name])
        try:
            profile.set_shape(name, lo, opt, hi)
        except ValueError as exc:  # TensorRT checks min <= opt <= max and equal ranks here
            raise TensorRTBuildError(f"TensorRT rejected the profile shapes of {graph_name} input {name} "
                                     f"(min {lo}, opt {opt}, max {hi}): {exc}") from None
    if config.add_optimization_profile(profile) < 0:  # -1: TensorRT found the profile invalid
        given = "; ".join(f"{n} {tuple(shapes[n][0])}..{tuple(shapes[n][2])}" for n in names)
        raise TensorRTBuildError(f"TensorRT rejected the optimisation profile for {graph_name} ({given}); "
                                 "each input needs min <= opt <= max in every dimension (see the tensorrt log)")


def _attach_timing_cache(config, timing_cache_path) -> None:
    timing_bytes = b""
    if timing_cache_path is not None and Path(timing_cache_path).is_file():
        timing_bytes = Path(timing_cache_path).read_bytes()
    cache = config.create_timing_cache(timing_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another device or version: start from an empty one.
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)


def parser_error_text(error) -> str:
    """One line from the ParserError that OnnxParser.get_error returns."""
    node = error.node_name() or (f"node {error.node()}" if error.node() >= 0 else "")
    where = f"{node} ({error.node_operator()}): " if node and error.node_operator() else f"{node}: " if node else ""
    return f"{where}{error.desc()} [{error.code().name}]"


def timing_cache_path(engines, target: engine_cache.BuildTarget) -> Path:
    """TensorRT's timing cache for this TensorRT version and GPU, shared by every bundle's builds."""
    key = f"{target.trt_version}|{target.gpu_name}|{target.compute_capability}"
    import hashlib  # noqa: PLC0415

    return engine_cache.timing_cache_dir(engines) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.cache"


@dataclasses.dataclass(frozen=True)
class EngineBuildSettings:
    """How build_engines builds a bundle's plans. precision: that of the ONNX graphs they are built from;
    profile: the optimisation profile (None: graphs.DEFAULT_PROFILE); onnx_dir: a folder of graphs to use
    instead of the engine cache's; force: build again even where valid plans exist; device: the CUDA device
    to build for (None: the current one)."""

    precision: str = "fp16"
    profile: Optional[ShapeProfile] = None
    onnx_dir: Optional[Path] = None
    force: bool = False
    device: object = None


def build_engines(bundle_dir, engines, *, progress: Progress = None, **settings) -> dict:
    """Build (or find cached) TensorRT plans for a bundle in the engine cache `engines`; returns {graph: plan path}.

    settings: the fields of EngineBuildSettings. The ONNX graphs come from `onnx_dir` or the cache and are
    exported first if missing. Valid cached plans are reused unless `force`; stale plans of the same slot are
    removed.
    """
    from ..runtime.bundle import load_bundle  # noqa: PLC0415
    from .onnx_export import export_onnx, find_onnx  # noqa: PLC0415

    options = EngineBuildSettings(**settings)
    trt = import_tensorrt()
    dev = require_cuda(options.device)
    bundle = load_bundle(bundle_dir)
    precision = precision_name(options.precision)
    profile = options.profile or DEFAULT_PROFILE
    gpu_name, cc = engine_cache.cuda_identity(dev)
    report(progress, f"tensorrt: {trt.__version__} on {gpu_name} (sm {cc}), {precision}, profile {profile.tag}")

    graphs = find_onnx(bundle, precision, engines, options.onnx_dir)
    if graphs is None:
        report(progress, "tensorrt: no ONNX graphs cached for this bundle; exporting them first")
        graphs = export_onnx(bundle_dir, out_dir=options.onnx_dir, engines=engines, dtype=precision, device=dev,
                             progress=progress)

    target = engine_cache.BuildTarget(trt.__version__, gpu_name, cc)
    tcache = timing_cache_path(engines, target)
    folder = engine_cache.bundle_cache_dir(engines, bundle.bundle_id)
    out = {}
    for graph in GRAPHS:
        key = engine_key(graph, bundle.bundle_id, precision, profile, target)
        for path, reason in engine_cache.prune_slot(key, PLAN_EXT, folder):
            report(progress, f"tensorrt: removed stale engine {path.name} ({reason})")
        cached = engine_cache.find_artifact(key, PLAN_EXT, folder)
        if cached is not None and not options.force:
            report(progress, f"tensorrt: {graph} engine is cached: {cached}")
            out[graph] = cached
            continue
        shapes = profile_shapes(bundle, graph, profile)
        with torch_device(dev):
            plan = build_engine(graphs[graph], shapes, timing_cache_path=tcache, progress=progress)
        path = key.path(PLAN_EXT, folder)
        atomic_write_bytes(path, plan)
        engine_cache.write_sidecar(path, key, onnx=str(graphs[graph]), shapes={k: list(map(list, v)) for k, v in shapes.items()})
        report(progress, f"tensorrt: wrote {path} ({len(plan) / 2**20:.1f} MiB)")
        out[graph] = path
    return out


def torch_device(dev):
    """Make `dev` the current CUDA device while building (TensorRT builds for the current device)."""
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    return torch.cuda.device(dev) if getattr(dev, "type", None) == "cuda" else contextlib.nullcontext()
