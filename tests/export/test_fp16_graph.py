"""fp16 graphs with fp32 islands: the static check finds fp16 normalisations, softmax and reductions, and
keep_fp32 wraps them in casts without changing what the graph computes."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from instantrestore.export.fp16_graph import keep_fp32
from instantrestore.export.opcheck import check_ops, fp16_unsafe_nodes

C = 64


def norm_then_softmax() -> onnx.ModelProto:
    """x (fp16) -> LayerNormalization -> Add -> Softmax -> ReduceMean -> y (fp16): three ops that must not
    compute in fp16, one that may."""
    half = [helper.make_tensor(name, TensorProto.FLOAT16, [C], np.full(C, value, np.float16))
            for name, value in (("scale", 1.5), ("bias", 0.25))]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["normed"], axis=-1, name="norm"),
        helper.make_node("Add", ["normed", "bias"], ["shifted"], name="add"),
        helper.make_node("Softmax", ["shifted"], ["weights"], axis=-1, name="softmax"),
        helper.make_node("ReduceMean", ["weights", "axes"], ["y"], keepdims=1, name="mean"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 8, C])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 8, 1])], [*half, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_the_check_names_each_op_that_would_compute_in_fp16():
    assert fp16_unsafe_nodes(norm_then_softmax()) == ["norm (LayerNormalization)", "softmax (Softmax)",
                                                      "mean (ReduceMean)"]


def test_keep_fp32_casts_around_those_ops_only_and_computes_the_same():
    model = norm_then_softmax()
    x = (np.random.default_rng(0).standard_normal((2, 8, C)) * 40).astype(np.float16)
    before = run(model, x)
    assert keep_fp32(model) == 3
    onnx.checker.check_model(model, full_check=True)
    assert fp16_unsafe_nodes(model) == []
    by_name = {node.name: node for node in model.graph.node}
    casts = [node for node in model.graph.node if node.op_type == "Cast"]
    assert len(casts) == 3 + 3  # the computed fp16 inputs in (x, shifted, weights), the three outputs back
    # constant inputs become fp32 constants, not casts: TensorRT's parser needs a normalisation's weights as such
    fp32 = {init.name: init for init in model.graph.initializer if init.data_type == TensorProto.FLOAT}
    assert by_name["norm"].input[1:] == ["scale_fp32", "bias_fp32"] and set(fp32) == {"scale_fp32", "bias_fp32"}
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(fp32["scale_fp32"]), np.full(C, 1.5, np.float32))
    assert by_name["add"].input[0] == "normed"  # the op between the islands stays fp16, on the same tensors
    assert [o.name for o in model.graph.output] == ["y"] and model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    after = run(model, x)
    assert after.dtype == np.float16
    np.testing.assert_allclose(after.astype(np.float32), before.astype(np.float32), rtol=1e-3, atol=1e-6)


def test_an_fp32_graph_is_left_alone():
    model = norm_then_softmax()
    fp32 = onnx.helper.make_model(helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, C])]), opset_imports=model.opset_import)
    assert fp16_unsafe_nodes(fp32) == [] and keep_fp32(fp32) == 0 and len(fp32.graph.node) == 1


def test_an_instance_norms_weights_stay_constants_tensorrt_can_parse():
    """GroupNorm exports as InstanceNormalization, whose scale and B TensorRT's parser takes only as constants."""
    weights = [helper.make_tensor(name, TensorProto.FLOAT16, [4], np.full(4, value, np.float16))
               for name, value in (("scale", 2.0), ("B", -1.0))]
    graph = helper.make_graph([helper.make_node("InstanceNormalization", ["x", "scale", "B"], ["y"], name="norm")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, C])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, C])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = (np.random.default_rng(1).standard_normal((1, 4, C)) * 300).astype(np.float16)
    before = run(model, x)
    assert keep_fp32(model) == 1 and check_ops(model).restrictions == [] and fp16_unsafe_nodes(model) == []
    np.testing.assert_allclose(run(model, x).astype(np.float32), before.astype(np.float32), rtol=1e-3, atol=2e-3)
