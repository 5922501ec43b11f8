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

from instantrestore.runtime.errors import InstantRestoreError

OPS_FILE = Path(__file__).with_name("trt_onnx_ops.txt")
DEFAULT_DOMAINS = ("", "ai.onnx")

# Spectral ops: FreeU's Fourier filter must be exported as matrix products, never as these.
FORBIDDEN_OPS = frozenset({"DFT", "STFT", "MelWeightMatrix", "BlackmanWindow", "HannWindow", "HammingWindow"})
COMPLEX_TYPES = frozenset({onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128})


class OpCheckError(InstantRestoreError, ValueError):
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
    restrictions: list = dataclasses.field(default_factory=list)  # nodes breaking a documented restriction

    @property
    def ok(self) -> bool:
        return not (self.unsupported or self.forbidden or self.complex_tensors or self.opset_problem or self.restrictions)

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
        if self.restrictions:
            parts.append("restrictions: " + "; ".join(self.restrictions[:5]))
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
    yield from _walk_nodes(graph.node)


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
        for subgraph in _subgraphs(node):
            yield from _graph_value_types(subgraph)


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
        for subgraph in _subgraphs(node):
            yield from _walk_graph(subgraph)


def _subgraphs(node: onnx.NodeProto):
    """The bodies of If, Loop, Scan and the like."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


# Restrictions of the support matrix that a static look at the graph can verify.
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
CONSTANT_INPUTS = {  # op -> (input index, what) that must be a build-time constant
    "InstanceNormalization": ((1, "scale"), (2, "B")),
    "Slice": ((3, "axes"),),
    "Squeeze": ((1, "axes"),),
    "Unsqueeze": ((1, "axes"),),
    "CumSum": ((1, "axis"),),
    "TopK": ((1, "K"),),
}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def check_restrictions(graph: onnx.GraphProto) -> list:
    """Nodes of the main graph that break a restriction TensorRT's parser documents for its op."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    problems = []
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            continue
        label = node.name or node.op_type
        for index, what in CONSTANT_INPUTS.get(node.op_type, ()):
            if len(node.input) > index and node.input[index] and node.input[index] not in constants:
                problems.append(f"{label}: {node.op_type} `{what}` must be a constant")
        if node.op_type == "Resize":
            mode = _attr(node, "mode", "nearest")
            coords = _attr(node, "coordinate_transformation_mode", "half_pixel")
            nearest = _attr(node, "nearest_mode", "round_prefer_floor")
            if mode not in RESIZE_MODES or coords not in RESIZE_COORDS or (mode == "nearest" and nearest not in RESIZE_NEAREST):
                problems.append(f"{label}: Resize mode {mode}/{coords}/{nearest} is unsupported")
            if _attr(node, "antialias", 0):
                problems.append(f"{label}: Resize antialiasing is unsupported")
            if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
                problems.append(f"{label}: Resize keep_aspect_ratio_policy must be stretch")
    return problems


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
    restrictions = check_restrictions(model.graph)
    return OpReport(counts, opset, unsupported, forbidden, complex_tensors, opset_problem, restrictions)


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


# ------------------------------------------------------------------------------------------------ fp16 graphs
# Ops that must compute in fp32 inside an fp16 graph: normalisations and accumulating reductions sum thousands of
# values (fp16 overflows past 65504 and keeps 11 bits), and softmax sums its exponentials. TensorRT's strongly
# typed networks (the only kind in TensorRT 11) run each op in its inputs' type, so the graph must say fp32 here.
FP32_OPS = frozenset({
    "GroupNormalization", "InstanceNormalization", "LayerNormalization", "BatchNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
})


def tensor_types(model: onnx.ModelProto) -> dict:
    """{tensor name: ONNX element type} of the main graph, with the types shape inference derives."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)
             if vi.type.HasField("tensor_type")}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def fp16_unsafe_nodes(model, types: Optional[dict] = None) -> list:
    """Nodes of FP32_OPS that would compute in fp16: "name (Op)" for each; empty for a sound fp16 graph."""
    model = _load(model)
    types = tensor_types(model) if types is None else types
    return [f"{node.name or node.output[0]} ({node.op_type})" for node in model.graph.node
            if node.domain in DEFAULT_DOMAINS and node.op_type in FP32_OPS
            and any(types.get(name) == onnx.TensorProto.FLOAT16 for name in node.input if name)]
