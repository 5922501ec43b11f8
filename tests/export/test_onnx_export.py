"""ONNX export of the restorer and enroller graphs, fp32 and fp16."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from instantrestore.export import onnx_export
from instantrestore.export.onnx_export import OnnxExportError, export_onnx
from instantrestore.export.opcheck import assert_trt_compatible, fp16_unsafe_nodes
from instantrestore.runtime import engine_cache, load_bundle
from instantrestore.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeOptions


@pytest.fixture(scope="module")
def fp16_graphs(onnx_home, tiny_bundle, tmp_path_factory):
    """fp16 graphs, through the TorchScript exporter (the fallback path), into an explicit folder."""
    out = tmp_path_factory.mktemp("onnx16")
    return export_onnx(tiny_bundle, out_dir=out, dtype="float16", exporter="legacy"), out


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
        # the graph says fp32 wherever fp16 must not compute (TensorRT's strongly typed networks take it from there)
        assert fp16_unsafe_nodes(model) == []
        islands = sum(n.op_type == "Cast" and n.name.endswith("_to_fp32") for n in model.graph.node)
        assert islands >= sum(n.op_type in ("InstanceNormalization", "LayerNormalization", "Softmax")
                              for n in model.graph.node) > 0
    assert engine_cache.find_onnx_graphs(bundle.bundle_id, "fp16", out) == paths
    cache = engine_cache.bundle_cache_dir(onnx_home, bundle.bundle_id)
    assert engine_cache.find_onnx_graphs(bundle.bundle_id, "fp16", cache) is None  # not in the cache: written to out_dir


def test_fp16_graph_runs_close_to_fp32(fp16_graphs, ort_restorer, tiny_bundle):
    paths, out = fp16_graphs
    bundle = load_bundle(tiny_bundle)
    backend = OnnxRuntimeBackend(bundle, device="cpu", dtype=torch.float16, options=OnnxRuntimeOptions(onnx_dir=out))
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
