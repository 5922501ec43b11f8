"""fp16 graphs with fp32 islands: after an fp16 export, each op that must compute in fp32 (opcheck.FP32_OPS:
normalisations, softmax, accumulating reductions) gets its fp16 inputs cast to fp32 and its outputs cast back.
The graph then carries its own precision, which is what TensorRT's strongly typed networks build from and what
onnxruntime runs. Only the graph's structure changes; external weights stay where they are."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .opcheck import DEFAULT_DOMAINS, FP32_OPS, fp16_unsafe_nodes, tensor_types


def keep_fp32(model: onnx.ModelProto) -> int:
    """Wrap every fp16 node of FP32_OPS in `model` (in place) in casts to fp32 and back; returns how many."""
    types = tensor_types(model)
    nodes, wrapped = [], 0
    for index, node in enumerate(model.graph.node):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in FP32_OPS or not any(
                types.get(name) == TensorProto.FLOAT16 for name in node.input if name):
            nodes.append(node)
            continue
        label = f"{node.name or node.op_type}_{index}"
        for i, name in enumerate(node.input):
            if name and types.get(name) == TensorProto.FLOAT16:
                node.input[i] = f"{label}_in{i}_fp32"
                nodes.append(helper.make_node("Cast", [name], [node.input[i]], name=f"{label}_in{i}_to_fp32",
                                              to=TensorProto.FLOAT))
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT16:
                node.output[i] = f"{label}_out{i}_fp32"
                nodes.append(helper.make_node("Cast", [node.output[i]], [name], name=f"{label}_out{i}_to_fp16",
                                              to=TensorProto.FLOAT16))
        wrapped += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    left = fp16_unsafe_nodes(model)
    if left:  # what we wrote is checked, not assumed
        raise ValueError(f"fp16 nodes left after keep_fp32: {', '.join(left[:5])}")
    return wrapped


__all__ = ["keep_fp32"]
