"""Static check of an ONNX graph against the operators TensorRT's ONNX parser supports.

The list lives in trt_onnx_ops.txt beside this file (with its source). The check walks the main
graph, control-flow subgraphs and model-local functions, so a function-wrapped op cannot hide, and
also rejects FFT-family operators and complex tensors, which the design forbids in exported graphs.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Iterable, Optional, Union

import onnx

OPS_FILE = Path(__file__).with_name("trt_onnx_ops.txt")
DEFAULT_DOMAINS = ("", "ai.onnx")

# Spectral ops: FreeU's Fourier filter must be exported as matrix products, never as these.
FORBIDDEN_OPS = frozenset({"DFT", "STFT", "MelWeightMatrix", "BlackmanWindow", "HannWindow", "HammingWindow"})
COMPLEX_TYPES = frozenset({onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128})


class OpCheckError(ValueError):
    """The graph uses operators TensorRT cannot parse, or forbidden spectral/complex ops."""


@dataclasses.dataclass(frozen=True)
class SupportedOps:
    ops: frozenset
    opset_min: int
    opset_max: int
    source: str


@dataclasses.dataclass
class OpReport:
    ops: collections.Counter  # (domain, op_type) -> count
    opset: Optional[int]
    unsupported: list  # "domain::op" strings TensorRT cannot parse
    forbidden: list  # FFT-family ops
    complex_tensors: list  # names of complex-typed tensors
    opset_problem: Optional[str]

    @property
    def ok(self) -> bool:
        return not (self.unsupported or self.forbidden or self.complex_tensors or self.opset_problem)

    def summary(self) -> str:
        parts = []
        if self.unsupported:
            parts.append("ops TensorRT cannot parse: " + ", ".join(self.unsupported))
        if self.forbidden:
            parts.append("FFT-family ops: " + ", ".join(self.forbidden))
        if self.complex_tensors:
            parts.append("complex tensors: " + ", ".join(self.complex_tensors[:5]))
        if self.opset_problem:
            parts.append(self.opset_problem)
        return "; ".join(parts) if parts else f"{sum(self.ops.values())} nodes, {len(self.ops)} op types, all supported"


def load_supported_ops(path: Union[str, Path, None] = None) -> SupportedOps:
    path = Path(path) if path else OPS_FILE
    ops, opset_min, opset_max, source = set(), 1, 10**6, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# Source:"):
            source = line[len("# Source:"):].strip()
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("opset_min "):
            opset_min = int(line.split()[1])
        elif line.startswith("opset_max "):
            opset_max = int(line.split()[1])
        else:
            ops.add(line)
    if not ops:
        raise OpCheckError(f"{path} lists no operators")
    return SupportedOps(frozenset(ops), opset_min, opset_max, source)


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    # Op types live in the graph proto; the weights (external data) are not needed.
    return onnx.load(str(model), load_external_data=False)


def _walk_graph(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graph(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk_graph(g)


def _graph_value_types(graph: onnx.GraphProto):
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            yield vi.name, vi.type.tensor_type.elem_type
    for init in graph.initializer:
        yield init.name, init.data_type
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield f"{node.name or node.op_type}.{attr.name}", attr.t.data_type
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _graph_value_types(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graph_value_types(g)


def collect_ops(model) -> collections.Counter:
    """(domain, op_type) counts of every node that will run, expanding model-local functions."""
    model = _load(model)
    functions = {(f.domain, f.name): f for f in model.functions}
    counts: collections.Counter = collections.Counter()

    def visit(nodes: Iterable[onnx.NodeProto], stack: tuple):
        for node in nodes:
            fkey = (node.domain, node.op_type)
            if fkey in functions:
                if fkey in stack:
                    raise OpCheckError(f"recursive ONNX function {node.domain}::{node.op_type}")
                visit(_walk_nodes(functions[fkey].node), stack + (fkey,))
            else:
                counts[(node.domain or "", node.op_type)] += 1

    visit(_walk_graph(model.graph), ())
    return counts


def _walk_nodes(nodes):
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graph(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk_graph(g)


def check_ops(model, supported: Optional[SupportedOps] = None) -> OpReport:
    """Report on every op in `model` (a ModelProto or a path) against TensorRT's supported list."""
    model = _load(model)
    supported = supported or load_supported_ops()
    counts = collect_ops(model)
    unsupported, forbidden = [], []
    for domain, op in sorted(counts):
        name = op if domain in DEFAULT_DOMAINS else f"{domain}::{op}"
        if op in FORBIDDEN_OPS and domain in DEFAULT_DOMAINS:
            forbidden.append(name)
        elif domain not in DEFAULT_DOMAINS or op not in supported.ops:
            unsupported.append(name)
    complex_tensors = sorted({n for n, t in _graph_value_types(model.graph) if t in COMPLEX_TYPES})
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    opset_problem = None
    if opset is None:
        opset_problem = "no default-domain opset import"
    elif not supported.opset_min <= opset <= supported.opset_max:
        opset_problem = f"opset {opset} outside TensorRT's range {supported.opset_min}..{supported.opset_max}"
    return OpReport(counts, opset, unsupported, forbidden, complex_tensors, opset_problem)


def assert_trt_compatible(model, what: str = "graph") -> OpReport:
    report = check_ops(model)
    if not report.ok:
        raise OpCheckError(f"{what}: {report.summary()}")
    return report


def assert_no_spectral_ops(model, what: str = "graph") -> None:
    """FFT/DFT/complex check alone (applies to every export, TensorRT or not)."""
    report = check_ops(model)
    if report.forbidden or report.complex_tensors:
        bad = report.forbidden + report.complex_tensors
        raise OpCheckError(f"{what} contains FFT/complex ops or tensors: {', '.join(bad)}")
