"""ONNX export of the miniature model, the static TensorRT operator check, and onnxruntime parity with
the torch backend through load_restorer."""


import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from instantrestore.export import onnx_export
from instantrestore.export.onnx_export import OnnxExportError, export_onnx
from instantrestore.export.opcheck import (
    OpCheckError,
    assert_no_spectral_ops,
    assert_trt_compatible,
    check_ops,
    load_supported_ops,
)
from instantrestore.runtime import engine_cache, load_bundle, load_restorer
from instantrestore.runtime.backends.onnxruntime_backend import (
    OnnxGraphNotFoundError,
    OnnxRuntimeBackend,
    OnnxRuntimeError,
    choose_providers,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory):
    """A private engine cache folder for this module."""
    return tmp_path_factory.mktemp("ir-home") / "engines"


@pytest.fixture(scope="module")
def fp32_graphs(onnx_home, tiny_bundle):
    """fp32 graphs exported once into the cache with the default (dynamo) exporter."""
    messages = []
    paths = export_onnx(tiny_bundle, engines=onnx_home, dtype="float32", progress=messages.append)
    return paths, messages


@pytest.fixture(scope="module")
def fp16_graphs(onnx_home, tiny_bundle, tmp_path_factory):
    """fp16 graphs, through the TorchScript exporter (the fallback path), into an explicit folder."""
    out = tmp_path_factory.mktemp("onnx16")
    return export_onnx(tiny_bundle, out_dir=out, dtype="float16", exporter="legacy"), out


@pytest.fixture(scope="module")
def ort_restorer(fp32_graphs, onnx_home, tiny_bundle):
    return load_restorer(tiny_bundle, backend="onnxruntime", device="cpu", dtype=torch.float32, engines=onnx_home)


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ------------------------------------------------------------------------------------------ export


def test_fp32_graphs_pass_checker_and_tensorrt_op_check(fp32_graphs, tiny_bundle, onnx_home):
    paths, messages = fp32_graphs
    bundle = load_bundle(tiny_bundle)
    num_layers = len(bundle.layer_shapes)
    assert set(paths) == {"restorer", "enroller"}
    for graph, path in paths.items():
        assert path.parent == engine_cache.bundle_cache_dir(onnx_home, bundle.bundle_id)
        assert str(path).startswith(str(onnx_home))
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        report = assert_trt_compatible(model, graph)
        assert report.opset >= 18
        assert not any(op in ("DFT", "STFT") for _, op in report.ops)
        assert engine_cache.classify(path, engine_cache.onnx_key(graph, bundle.bundle_id, "fp32"), verify_hash=True)[0] == "valid"
        meta = engine_cache.read_sidecar(path)
        assert meta["opset"] == report.opset and meta["exporter"] in ("dynamo", "legacy")
    restorer = onnx.load(str(paths["restorer"]), load_external_data=False)
    names = [i.name for i in restorer.graph.input]
    assert names == ["images", "noise"] + [f"{c}{i}" for i in range(num_layers) for c in "kv"]
    assert [o.name for o in restorer.graph.output] == ["restored"]
    S, s = bundle.crop_size, bundle.latent_size
    images, noise, k0 = restorer.graph.input[0], restorer.graph.input[1], restorer.graph.input[2]
    assert isinstance(_dims(images)[0], str) and _dims(images)[1:] == [3, S, S]
    assert isinstance(_dims(noise)[0], str) and _dims(noise)[1:] == [4, s, s]
    t0, c0 = bundle.layer_shapes[0]
    assert isinstance(_dims(k0)[0], str) and _dims(k0)[1:] == [t0, c0]
    assert _dims(k0)[0] != _dims(images)[0]  # reference count and batch are independent axes
    enroller = onnx.load(str(paths["enroller"]), load_external_data=False)
    assert [i.name for i in enroller.graph.input] == ["refs", "noise"]
    assert [o.name for o in enroller.graph.output] == [f"{c}{i}" for i in range(num_layers) for c in "kv"]
    assert any("wrote" in m for m in messages)


def test_export_reuses_valid_graphs(fp32_graphs, tiny_bundle, onnx_home):
    paths, _ = fp32_graphs
    stamp = {g: p.stat().st_mtime_ns for g, p in paths.items()}
    messages = []
    again = export_onnx(tiny_bundle, engines=onnx_home, dtype="float32", progress=messages.append)
    assert again == paths
    assert {g: p.stat().st_mtime_ns for g, p in again.items()} == stamp
    assert any("up to date" in m for m in messages)


def test_fp16_graphs_export_and_pass_checks(fp16_graphs, tiny_bundle, onnx_home):
    paths, out = fp16_graphs
    bundle = load_bundle(tiny_bundle)
    for graph, path in paths.items():
        assert path.parent == out
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path))
        assert_trt_compatible(model, graph)
        for vi in (*model.graph.input, *model.graph.output):
            assert vi.type.tensor_type.elem_type == TensorProto.FLOAT16, vi.name
    assert engine_cache.find_onnx_graphs(bundle.bundle_id, "fp16", out) == paths
    cache = engine_cache.bundle_cache_dir(onnx_home, bundle.bundle_id)
    assert engine_cache.find_onnx_graphs(bundle.bundle_id, "fp16", cache) is None  # not in the cache: written to out_dir


def test_fp16_graph_runs_close_to_fp32(fp16_graphs, ort_restorer, tiny_bundle):
    paths, out = fp16_graphs
    bundle = load_bundle(tiny_bundle)
    backend = OnnxRuntimeBackend(bundle, device="cpu", dtype=torch.float16, onnx_dir=out)
    g = torch.Generator().manual_seed(3)
    S = bundle.crop_size
    refs = torch.rand(2, 3, S, S, generator=g) * 2 - 1
    profile = ort_restorer.enroll(refs)
    x = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    want = ort_restorer.restore(x, profile)
    from instantrestore.runtime.restorer import Restorer

    got = Restorer(bundle, backend).restore(x.half(), profile)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert (got.float() - want).abs().max().item() < 0.05


def test_export_refuses_old_opset(tiny_bundle, tmp_path):
    with pytest.raises(OnnxExportError, match="opset 17"):
        export_onnx(tiny_bundle, out_dir=tmp_path, opset=17)


def test_external_data_when_large(tiny_bundle, tmp_path, monkeypatch):
    """Graphs over 2 GB keep their weights in one .data file (simulated by lowering the limit; this also
    runs the TorchScript exporter in fp32)."""
    bundle = load_bundle(tiny_bundle)
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1)
    messages = []
    paths = export_onnx(tiny_bundle, out_dir=tmp_path, graphs=("enroller",), exporter="legacy", progress=messages.append)
    path = paths["enroller"]
    data = path.with_name(path.name + ".data")
    assert data.is_file() and data.stat().st_size > path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, data.name, path.name + ".json"])
    assert any(f"go to {data.name}" in m for m in messages)
    key = engine_cache.onnx_key("enroller", bundle.bundle_id, "fp32")
    assert engine_cache.classify(path, key, verify_hash=True)[0] == "valid"
    assert data.name in engine_cache.read_sidecar(path)["files"]
    onnx.checker.check_model(str(path))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    S, s = bundle.crop_size, bundle.latent_size
    out = sess.run(None, {"refs": np.zeros((1, 3, S, S), np.float32), "noise": np.zeros((1, 4, s, s), np.float32)})
    assert out[0].shape == (1, *bundle.layer_shapes[0])
    data.write_bytes(b"truncated")
    assert engine_cache.classify(path, key)[0] == "corrupt"


# ----------------------------------------------------------------------------------- parity with torch


@pytest.mark.parametrize("n_refs", [1, 4])
def test_onnxruntime_matches_torch(ort_restorer, tiny_restorer, tiny_bundle, n_refs):
    assert ort_restorer.backend.name == "onnxruntime"
    assert ort_restorer.backend.provider == "CPUExecutionProvider"
    S = ort_restorer.crop_size
    g = torch.Generator().manual_seed(10 + n_refs)
    refs = torch.rand(n_refs, 3, S, S, generator=g) * 2 - 1
    p_torch, p_ort = tiny_restorer.enroll(refs), ort_restorer.enroll(refs)
    for a, b in zip(p_torch.keys + p_torch.values, p_ort.keys + p_ort.values):
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().max().item() < TOL
    for batch in (1, 2):
        x = torch.rand(batch, 3, S, S, generator=g) * 2 - 1
        want = tiny_restorer.restore(x, p_torch)
        got = ort_restorer.restore(x, p_torch)
        assert got.shape == want.shape == x.shape
        assert (got - want).abs().max().item() < TOL
        # a second frame reuses the bound K/V and gives the same answer
        assert torch.equal(ort_restorer.restore(x, p_torch), got)


@pytest.mark.parametrize("use_adain,train_input", [(True, False), (False, True)])
def test_onnxruntime_restores_like_the_authors_math(fp32_graphs, onnx_home, release_factory, use_adain, train_input):
    """Both flag variants of the release, through import_checkpoint, the ONNX graphs and onnxruntime, against
    the independent implementation of the equations."""
    from reference import ReferenceInstantRestore

    release = release_factory(use_adain, train_input)
    export_onnx(release["bundle"], engines=onnx_home, dtype="float32", exporter="legacy")  # cached for the first variant
    restorer = load_restorer(release["bundle"], backend="onnxruntime", device="cpu", dtype=torch.float32,
                             engines=onnx_home)
    S = restorer.crop_size
    g = torch.Generator().manual_seed(7)
    smooth = torch.nn.functional.interpolate(torch.rand(5, 3, 8, 8, generator=g) * 2 - 1, size=S, mode="bicubic")
    images, refs = smooth[:2].clamp(-1, 1), smooth[2:].clamp(-1, 1)
    ref_noise, noise = torch.randn(3, 4, S // 8, S // 8, generator=g), torch.randn(2, 4, S // 8, S // 8, generator=g)
    got = restorer.restore(images, restorer.enroll(refs, noise=ref_noise), noise=noise)
    want = ReferenceInstantRestore(release).restore(images, refs, ref_noise, noise)
    assert (got - want).abs().max().item() <= 2e-4


def test_profile_switch_rebinds_references(ort_restorer, tiny_restorer):
    S = ort_restorer.crop_size
    g = torch.Generator().manual_seed(99)
    x = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    pa = tiny_restorer.enroll(torch.rand(2, 3, S, S, generator=g) * 2 - 1)
    pb = tiny_restorer.enroll(torch.rand(3, 3, S, S, generator=g) * 2 - 1)
    ya, yb = ort_restorer.restore(x, pa), ort_restorer.restore(x, pb)
    assert (ya - yb).abs().max().item() > 1e-3
    assert (yb - tiny_restorer.restore(x, pb)).abs().max().item() < TOL
    assert (ort_restorer.restore(x, pa) - ya).abs().max().item() == 0


def test_io_binding_path_matches(ort_restorer, tiny_bundle, onnx_home):
    """The IO-binding path (what CUDA uses, run here on CPU memory) gives the same answers as plain run()."""
    from instantrestore.runtime.restorer import Restorer

    bundle = load_bundle(tiny_bundle)
    bound = Restorer(bundle, OnnxRuntimeBackend(bundle, onnx_home, device="cpu", dtype=torch.float32, io_binding=True))
    S = bundle.crop_size
    g = torch.Generator().manual_seed(7)
    refs = torch.rand(3, 3, S, S, generator=g) * 2 - 1
    pa, pb = bound.enroll(refs), ort_restorer.enroll(refs)
    assert all(torch.equal(a, b) for a, b in zip(pa.keys + pa.values, pb.keys + pb.values))
    other = ort_restorer.enroll(refs.flip(0))
    for batch in (2, 1):
        x = torch.rand(batch, 3, S, S, generator=g) * 2 - 1
        for profile in (pa, other, pa):  # rebinding K/V on a profile switch
            assert torch.equal(bound.restore(x, profile), ort_restorer.restore(x, profile))


def test_the_onnxruntime_backend_is_a_backend(ort_restorer):
    from instantrestore.runtime.backends import Backend

    assert isinstance(ort_restorer.backend, Backend)
    assert (ort_restorer.backend.device, ort_restorer.backend.dtype) == (torch.device("cpu"), torch.float32)


def test_missing_graphs_say_how_to_export(tiny_bundle, tmp_path):
    with pytest.raises(OnnxGraphNotFoundError, match="instantrestore export --onnx"):
        load_restorer(tiny_bundle, backend="onnxruntime", device="cpu", dtype=torch.float32, engines=tmp_path)


def test_provider_choice():
    assert choose_providers("cpu") == [("CPUExecutionProvider", {})]
    auto = [p for p, _ in choose_providers("auto")]
    assert auto[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(OnnxRuntimeError, match="CUDAExecutionProvider is not available"):
            choose_providers("cuda")
    else:
        assert choose_providers("cuda:0")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    with pytest.raises(OnnxRuntimeError, match="cannot run on device"):
        choose_providers("tpu")


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
