"""The static check of an ONNX graph against the operators TensorRT supports."""

import pytest
from onnx import TensorProto, helper

from instantrestore.export.opcheck import (
    OpCheckError,
    assert_no_spectral_ops,
    assert_trt_compatible,
    check_ops,
    load_supported_ops,
)


# ------------------------------------------------------------------------------------------ op check


def _model(nodes, inputs, outputs, opset=18, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    return helper.make_model(graph, opset_imports=imports, functions=list(functions))


def test_supported_list_names_its_source():
    ops = load_supported_ops()
    assert "onnx-tensorrt" in ops.source and "operators.md" in ops.source
    assert {"Conv", "MatMul", "Softmax", "InstanceNormalization", "Resize", "Split"} <= ops.ops
    assert "DFT" not in ops.ops and "Unique" not in ops.ops
    assert ops.opset_min <= 18 <= ops.opset_max


def test_op_check_flags_dft_custom_domain_and_complex():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2])
    dft = _model([helper.make_node("DFT", ["x"], ["y"])], [x], [y], opset=20)
    report = check_ops(dft)
    assert report.forbidden == ["DFT"] and not report.ok
    with pytest.raises(OpCheckError, match="FFT"):
        assert_no_spectral_ops(dft)
    custom = _model([helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")], [x], [y])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert check_ops(custom).unsupported == ["com.microsoft::FusedMatMul"]
    with pytest.raises(OpCheckError, match="cannot parse"):
        assert_trt_compatible(custom)
    unique = _model([helper.make_node("Unique", ["x"], ["y"])], [x], [y])
    assert check_ops(unique).unsupported == ["Unique"]
    z = helper.make_tensor_value_info("z", TensorProto.COMPLEX64, [1, 8])
    cplx = _model([helper.make_node("Identity", ["z"], ["w"])], [z], [helper.make_tensor_value_info("w", TensorProto.COMPLEX64, [1, 8])])
    assert check_ops(cplx).complex_tensors == ["w", "z"]
    ok = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert check_ops(ok).ok


def test_op_check_looks_inside_functions_and_subgraphs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2])
    fn = helper.make_function("local", "Spectral", ["a"], ["b"], [helper.make_node("DFT", ["a"], ["b"])],
                              [helper.make_opsetid("", 20)])
    model = _model([helper.make_node("Spectral", ["x"], ["y"], domain="local")], [x], [y], opset=20, functions=[fn])
    assert check_ops(model).forbidden == ["DFT"]
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    branch = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], [c, x], [y])
    assert check_ops(branch).unsupported == ["Unique"]


def test_op_check_opset_range():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    assert "outside" in check_ops(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [x], opset=8)).summary()


def test_op_check_static_restrictions():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [4])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [0.0] * 4)
    good = helper.make_graph([helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"])], "g", [x], [y],
                             initializer=[scale, bias])
    assert check_ops(helper.make_model(good, opset_imports=[helper.make_opsetid("", 18)])).ok
    bad = helper.make_graph([helper.make_node("InstanceNormalization", ["x", "s", "bias"], ["y"], name="norm")], "g",
                            [x, s], [y], initializer=[bias])
    report = check_ops(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 18)]))
    assert report.restrictions == ["norm: InstanceNormalization `scale` must be a constant"] and not report.ok
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    cubic = helper.make_graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")], "g",
                              [x], [y], initializer=[scales])
    assert "up: Resize mode cubic" in check_ops(helper.make_model(cubic, opset_imports=[helper.make_opsetid("", 18)])).summary()
