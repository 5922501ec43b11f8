"""fp16 graphs with fp32 islands: after an fp16 export, each op that must compute in fp32 (opcheck.FP32_OPS:
normalisations, softmax, accumulating reductions) gets its fp16 inputs cast to fp32 and its outputs cast back.
Constant inputs (a normalisation's scale and bias) become fp32 constants instead of casts, since TensorRT's parser
needs them as build-time weights. The graph then carries its own precision, which is what TensorRT's strongly
typed networks build from and what onnxruntime runs. External weights stay where they are."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .opcheck import DEFAULT_DOMAINS, FP32_OPS, tensor_types


class _Fp32Constants:
    """fp32 copies of the graph's fp16 constants (initializers, Constant nodes), made once each."""

    def __init__(self, model: onnx.ModelProto, base_dir: Optional[str]):
        self.model, self.base_dir = model, base_dir or ""
        self.tensors = {init.name: init for init in model.graph.initializer}
        self.tensors.update({node.output[0]: node.attribute[0].t for node in model.graph.node
                             if node.op_type == "Constant" and len(node.attribute) == 1
                             and node.attribute[0].name == "value"})
        self.made: dict = {}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def fp32(self, name: str) -> str:
        if name not in self.made:
            array = numpy_helper.to_array(self.tensors[name], base_dir=self.base_dir).astype(np.float32)
            copy = numpy_helper.from_array(array, f"{name}_fp32")
            self.model.graph.initializer.append(copy)
            self.made[name] = copy.name
        return self.made[name]


def keep_fp32(model: onnx.ModelProto, base_dir: Optional[str] = None) -> int:
    """Make every fp16 node of FP32_OPS in `model` (in place) compute in fp32; returns how many. `base_dir`: where
    the model's external data lies (for constants stored there)."""
    types = tensor_types(model)
    constants = _Fp32Constants(model, base_dir)
    nodes, wrapped = [], 0
    for index, node in enumerate(model.graph.node):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in FP32_OPS or not any(
                types.get(name) == TensorProto.FLOAT16 for name in node.input if name):
            nodes.append(node)
            continue
        label = f"{node.name or node.op_type}_{index}"
        for i, name in enumerate(node.input):
            if not name or types.get(name) != TensorProto.FLOAT16:
                continue
            if name in constants:
                node.input[i] = constants.fp32(name)
            else:
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
    return wrapped  # export_onnx checks the graph it wrote with opcheck.fp16_unsafe_nodes when it reads it back


__all__ = ["keep_fp32"]
