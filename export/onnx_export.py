"""Export a model bundle's restorer and enroller to ONNX.

Restorer graph: images (B,3,S,S), noise (B,4,s,s), k0, v0, ..., k{L-1}, v{L-1} (N,T_l,C_l) ->
restored (B,3,S,S). Enroller graph: refs (N,3,S,S), noise (N,4,s,s) -> k0, v0, ... (N,T_l,C_l).
B (batch) and N (reference count) are dynamic, 1..8, so one graph serves every profile.

fp16 graphs keep fp32 where fp16 would overflow or lose accuracy (normalisations, softmax, reductions:
fp16_graph.py), so the graph itself says every op's precision, as TensorRT's strongly typed networks require.

Opset 18 or newer (the exporter's opset 17 writes a Split this model's graph cannot use). Graphs
near or over protobuf's 2 GB limit keep their weights in one external-data file beside the .onnx
(`<name>.onnx.data`; the full model's graphs do, in fp32 and in fp16). Every graph is checked
with onnx.checker, for FFT/complex ops, and against TensorRT's supported operators, then written
atomically into the engine cache (or `out_dir`) with a sidecar that commits it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import onnx
import torch

from ..runtime import engine_cache
from ..runtime.bundle import load_bundle
from ..runtime.errors import InstantRestoreError
from ..runtime.files import new_temp
from ..runtime.graphs import (
    GRAPHS,
    MAX_BATCH,
    MAX_REFERENCES,
    input_names,
    output_names,
    precision_dtype,
    precision_name,
)
from ..runtime.network import build_net
from .fp16_graph import keep_fp32
from .opcheck import OpCheckError, assert_no_spectral_ops, check_ops, fp16_unsafe_nodes
from .progress import report

Progress = Optional[Callable[[str], None]]

MIN_OPSET = 18
DEFAULT_OPSET = 18
PROTOBUF_LIMIT = 2 * 1024**3  # a single protobuf cannot exceed 2 GB
EXPORTERS = ("dynamo", "legacy")

__all__ = ["ExportSettings", "export_onnx", "find_onnx", "OnnxExportError"]


class OnnxExportError(InstantRestoreError, RuntimeError):
    """The ONNX export or one of its checks failed."""


def find_onnx(bundle, precision, engines=None, out_dir=None) -> Optional[dict]:
    """{graph: path} of valid exported graphs for `bundle` (a Bundle) in `out_dir` or the cache, else None."""
    folder = engine_cache.graph_folder(engines, bundle.bundle_id, out_dir)
    return engine_cache.find_onnx_graphs(bundle.bundle_id, precision, folder)


def _sample_inputs(bundle, graph: str, restorer_kv, dtype, device):
    # 2 and 3 rather than 1: exporters specialise size-1 axes to constants.
    S, s, c = bundle.crop_size, bundle.latent_size, bundle.latent_channels
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    if graph == "restorer":
        return (rand(2, 3, S, S).clamp(-1, 1), rand(2, c, s, s), *restorer_kv)
    return (rand(3, 3, S, S).clamp(-1, 1), rand(3, c, s, s))


def _weight_bytes(net: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))


def _is_large(nbytes: int) -> bool:
    # Leave headroom for the graph itself under protobuf's 2 GB limit.
    return nbytes >= PROTOBUF_LIMIT - 64 * 1024**2


def _save_proto(proto: onnx.ModelProto, path: Path, large: bool) -> None:
    if large:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


@contextlib.contextmanager
def _quiet_exporter_log():
    """Without torch.onnx's warnings for operators this model does not use ("torchvision is not installed.
    Skipping torchvision::nms", one line each)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _keep_fp32_islands(path: Path) -> int:
    """fp16_graph.keep_fp32 on the graph file at `path`, in place; its weights (inline or in the .data file beside
    it) are untouched."""
    structure = onnx.load(str(path), load_external_data=False)
    wrapped = keep_fp32(structure, base_dir=str(path.parent))
    onnx.save_model(structure, str(path))
    return wrapped


def _check_signature(proto: onnx.ModelProto, graph: str, num_layers: int, dtype: torch.dtype) -> None:
    want_in, want_out = input_names(graph, num_layers), output_names(graph, num_layers)
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != want_in or got_out != want_out:
        raise OnnxExportError(f"{graph} graph has inputs {got_in} / outputs {got_out}, expected {want_in} / {want_out}")
    elem = onnx.TensorProto.FLOAT16 if dtype == torch.float16 else onnx.TensorProto.FLOAT
    for vi in (*proto.graph.input, *proto.graph.output):
        t = vi.type.tensor_type
        if t.elem_type != elem:
            raise OnnxExportError(f"{graph} tensor {vi.name} has ONNX type {t.elem_type}, expected {elem}")
        first = t.shape.dim[0]
        if not first.dim_param:  # axis 0 must stay symbolic (batch or reference count)
            raise OnnxExportError(f"{graph} tensor {vi.name} has a fixed first axis ({first.dim_value}); export lost the dynamic axis")


def _commit(tmp: Path, path: Path, key: engine_cache.ArtifactKey, info: dict) -> Path:
    """Move a checked graph (and its .data file) from the temp folder into place, then write the sidecar."""
    data_name = path.name + ".data"
    tmp_data = tmp.with_name(data_name)
    # The sidecar from an earlier export goes first: it must never vouch for new files.
    old_side = engine_cache.sidecar_path(path)
    if old_side.exists():
        old_side.unlink()
    extra = []
    if tmp_data.exists():
        os.replace(tmp_data, path.with_name(data_name))
        extra.append(path.with_name(data_name))
    elif path.with_name(data_name).exists():
        path.with_name(data_name).unlink()
    os.replace(tmp, path)
    engine_cache.write_sidecar(path, key, extra_files=extra, **info)
    return path


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How export_onnx writes a bundle's graphs, checked once here.

    dtype: "float32" or "float16" (weights and I/O of the graph). exporter: "dynamo" (torch.export based) or
    "legacy" (TorchScript tracer); if the dynamo exporter fails, the legacy one is tried. force: export again even
    where valid graphs exist. check_tensorrt: fail if an op is outside TensorRT's supported list (the FFT/complex
    check always applies)."""

    dtype: str = "float32"
    opset: int = DEFAULT_OPSET
    exporter: str = "dynamo"
    device: str = "cpu"
    graphs: tuple = GRAPHS
    force: bool = False
    check_tensorrt: bool = True

    def __post_init__(self):
        if self.opset < MIN_OPSET:
            raise OnnxExportError(f"opset {self.opset} is too old; use {MIN_OPSET} or newer (opset 17 writes an "
                                  "invalid Split here)")
        if self.exporter not in EXPORTERS:
            raise OnnxExportError(f"unknown exporter {self.exporter!r}; choose one of {EXPORTERS}")
        bad = [g for g in self.graphs if g not in GRAPHS]
        if bad:
            raise OnnxExportError(f"unknown graphs {bad}; choose from {GRAPHS}")
        precision_name(self.dtype)  # an unknown precision is said now

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return precision_dtype(self.precision)


def export_onnx(bundle_dir, out_dir=None, engines=None, *, progress: Progress = None, **settings) -> dict:
    """Export the restorer and enroller of a bundle; returns {graph: path of the .onnx}.

    out_dir: folder to write to (default: the bundle's folder in the engine cache `engines`). settings: the fields
    of ExportSettings (dtype, opset, exporter, device, graphs, force, check_tensorrt). Valid graphs already present
    are reused unless `force`.
    """
    options = ExportSettings(**settings)
    device = torch.device(options.device)
    if options.torch_dtype == torch.float16 and device.type == "cpu" and options.exporter == "legacy":
        report(progress, "onnx: tracing fp16 on the CPU (slow for the full model; pass device='cuda' where there is a "
                         "GPU)")
    bundle = load_bundle(bundle_dir)
    folder = engine_cache.graph_folder(engines, bundle.bundle_id, out_dir)
    keys = {g: engine_cache.onnx_key(g, bundle.bundle_id, options.precision) for g in options.graphs}
    out = {} if options.force else _valid_graphs(keys, folder)
    if len(out) == len(keys):
        report(progress, f"onnx: {options.precision} graphs are up to date in {folder}")
        return out
    folder.mkdir(parents=True, exist_ok=True)
    job = _GraphExport(bundle, options, device, Path(tempfile.mkdtemp(prefix="instantrestore-onnx-")), progress)
    try:
        for g in (g for g in options.graphs if g not in out):
            out[g] = job.write(g, keys[g].path("onnx", folder), keys[g])
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)
    return {g: out[g] for g in options.graphs}


def _valid_graphs(keys: dict, folder: Path) -> dict:
    found = {g: engine_cache.find_artifact(key, "onnx", folder) for g, key in keys.items()}
    return {g: path for g, path in found.items() if path is not None}


@dataclasses.dataclass
class _GraphExport:
    """One export_onnx run: each graph built, exported (with the legacy fallback), checked and committed."""

    bundle: object
    options: ExportSettings
    device: torch.device
    workdir: Path
    progress: Progress

    def __post_init__(self):
        # Sample K/V of the right shapes (N = 3); their values do not shape the graph.
        gen = torch.Generator().manual_seed(1)
        dtype = self.options.torch_dtype
        self.restorer_kv = tuple(torch.randn(3, t, c, generator=gen).to(device=self.device, dtype=dtype)
                                 for t, c in self.bundle.layer_shapes for _ in range(2))
        self.num_layers = len(self.bundle.layer_shapes)

    def write(self, g: str, path: Path, key) -> Path:
        options = self.options
        # one network at a time: the full model's are several GB each
        report(self.progress, f"onnx: building the {options.precision} {g} of bundle {self.bundle.bundle_id[:12]} "
                              f"on {self.device}")
        net = build_net(self.bundle, g, self.device, options.torch_dtype)
        args = _sample_inputs(self.bundle, g, self.restorer_kv, options.torch_dtype, self.device)
        t0 = time.monotonic()
        report(self.progress, f"onnx: exporting the {g} (opset {options.opset}, {options.exporter} exporter)")
        stage = new_temp(path, folder=True)  # same filesystem: atomic renames
        try:
            tmp = stage / path.name
            used = self.export(net, args, g, tmp)
            del net, args
            op_report = self.check(g, tmp, path)
            info = {"opset": op_report.opset, "exporter": used, "torch": torch.__version__, "onnx": onnx.__version__,
                    "inputs": input_names(g, self.num_layers), "outputs": output_names(g, self.num_layers),
                    "max_batch": MAX_BATCH, "max_references": MAX_REFERENCES}
            _commit(tmp, path, key, info)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        nodes = sum(op_report.ops.values())
        report(self.progress, f"onnx: wrote {path} ({nodes} nodes, {time.monotonic() - t0:.0f} s)")
        return path

    def export(self, net, args, g: str, tmp: Path) -> str:
        """Write the graph to `tmp` (fp16: with its fp32 islands); returns the exporter that wrote it."""
        exporter = self.options.exporter
        try:
            self.export_file(net, args, g, exporter, tmp)
        except Exception as exc:  # noqa: BLE001 - fall back, and report the original error if both fail
            if exporter != "dynamo":
                raise OnnxExportError(f"ONNX export of the {g} failed: {type(exc).__name__}: {exc}") from exc
            report(self.progress, f"onnx: dynamo exporter failed ({type(exc).__name__}: {str(exc)[:200]}); trying the "
                                  "legacy exporter")
            exporter = "legacy"
            for leftover in tmp.parent.iterdir():
                leftover.unlink()
            try:
                self.export_file(net, args, g, exporter, tmp)
            except Exception as exc2:  # noqa: BLE001
                raise OnnxExportError(f"ONNX export of the {g} failed with both exporters: "
                                      f"{type(exc2).__name__}: {exc2}") from exc2
        if self.options.torch_dtype == torch.float16:
            wrapped = _keep_fp32_islands(tmp)
            report(self.progress, f"onnx: {wrapped} normalisation, softmax and reduction nodes compute in fp32")
        return exporter

    def export_file(self, net, args, graph: str, exporter: str, path: Path) -> None:
        """Write the graph to `path` with `exporter`, with weights in `path.name + '.data'` when over 2 GB."""
        num_layers, opset = self.num_layers, self.options.opset
        names_in, names_out = input_names(graph, num_layers), output_names(graph, num_layers)
        large = _is_large(_weight_bytes(net))
        with warnings.catch_warnings(), _quiet_exporter_log():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes are expected
            if exporter == "dynamo":
                from torch.export import Dim  # noqa: PLC0415

                batch = Dim("batch", min=1, max=MAX_BATCH)
                refs = Dim("refs", min=1, max=MAX_REFERENCES)
                if graph == "restorer":
                    shapes = ({0: batch}, {0: batch}, tuple({0: refs} for _ in range(2 * num_layers)))
                else:
                    shapes = ({0: refs}, {0: refs})
                program = torch.onnx.export(
                    net, args, input_names=names_in, output_names=names_out, opset_version=opset,
                    dynamic_shapes=shapes, dynamo=True, optimize=True, verbose=False,
                )
                if program is None:
                    raise OnnxExportError(f"torch.onnx.export returned nothing for the {graph}")
                # Streams the weights to disk; the external-data file is named <file>.data, like ours.
                program.save(str(path), external_data=large)
                return
            # TorchScript tracer: runs the model once and keeps the declared axes symbolic.
            dynamic = {n: {0: "batch" if graph == "restorer" else "refs"} for n in names_in}
            if graph == "restorer":
                dynamic.update({n: {0: "refs"} for n in names_in[2:]})
                dynamic["restored"] = {0: "batch"}
            else:
                dynamic.update({n: {0: "refs"} for n in names_out})
            traced = self.workdir / f"{graph}.traced" / "model.onnx"
            traced.parent.mkdir(parents=True, exist_ok=True)
            torch.onnx.export(
                net, args, str(traced), input_names=names_in, output_names=names_out, opset_version=opset,
                dynamic_axes=dynamic, dynamo=False, do_constant_folding=True,
            )
            # The tracer scatters large weights over one file per tensor: gather them into one.
            _save_proto(onnx.load(str(traced), load_external_data=True), path, large)

    def check(self, g: str, tmp: Path, path: Path):
        """The written graph checked as it will be read: checker, signature, no FFT, fp16 islands, TensorRT's ops."""
        tmp_data = tmp.with_name(tmp.name + ".data")
        if tmp_data.exists():
            size = tmp_data.stat().st_size / 2**30
            report(self.progress, f"onnx: the {g}'s weights ({size:.2f} GiB) go to {path.name}.data beside the graph")
        onnx.checker.check_model(str(tmp))  # the path form reads external data and copes with graphs over 2 GB
        light = onnx.load(str(tmp), load_external_data=False)  # structure only, for the checks below
        _check_signature(light, g, self.num_layers, self.options.torch_dtype)
        assert_no_spectral_ops(light, f"{g} graph")
        unsafe = fp16_unsafe_nodes(light) if self.options.torch_dtype == torch.float16 else []
        if unsafe:
            raise OnnxExportError(f"{g} graph computes in fp16 where it must not: {', '.join(unsafe[:5])}")
        op_report = check_ops(light)
        if not op_report.ok:
            msg = f"{g} graph: {op_report.summary()}"
            if self.options.check_tensorrt:
                raise OpCheckError(msg + " (pass check_tensorrt=False to export for onnxruntime only)")
            report(self.progress, "onnx: warning: " + msg)
        return op_report
