"""TensorRT engine builds: profile shapes, precision, the timing cache and the engine cache, on stand-in
tensorrt modules following the recorded surfaces of TensorRT 10 and 11 (and on the real one where it imports)."""

import json
import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from instantrestore.export import tensorrt_build
from instantrestore.runtime import engine_cache, load_bundle, load_restorer
from instantrestore.runtime.backends import tensorrt_backend as bt
from instantrestore.runtime.graphs import DEFAULT_PROFILE, ShapeProfile

from tests.support.tensorrt_fakes import MAJORS, FakeTRT, _folder


def _have_tensorrt():
    try:
        bt.import_tensorrt()
    except bt.TensorRTUnavailableError:
        return False
    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(not _have_tensorrt(), reason="needs the tensorrt package and a CUDA GPU")


def test_profile_shapes_follow_the_bundle(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    S, s, L = bundle.crop_size, bundle.latent_size, len(bundle.layer_shapes)
    p = ShapeProfile(batch=(1, 2, 4), refs=(1, 4, 8))
    shapes = tensorrt_build.profile_shapes(bundle, "restorer", p)
    assert list(shapes) == ["images", "noise"] + [f"{c}{i}" for i in range(L) for c in "kv"]
    assert shapes["images"] == ((1, 3, S, S), (2, 3, S, S), (4, 3, S, S))
    assert shapes["noise"] == ((1, 4, s, s), (2, 4, s, s), (4, 4, s, s))
    for i, (t, c) in enumerate(bundle.layer_shapes):
        assert shapes[f"k{i}"] == shapes[f"v{i}"] == ((1, t, c), (4, t, c), (8, t, c))
    enroll = tensorrt_build.profile_shapes(bundle, "enroller", p)
    assert enroll == {"refs": ((1, 3, S, S), (4, 3, S, S), (8, 3, S, S)), "noise": ((1, 4, s, s), (4, 4, s, s), (8, 4, s, s))}
    with pytest.raises(ValueError):
        tensorrt_build.profile_shapes(bundle, "decoder", p)


def _tiny_graph(path, names, elem=TensorProto.FLOAT, node_name=""):
    inputs = [helper.make_tensor_value_info(n, elem, ["n", 2]) for n in names]
    out = helper.make_tensor_value_info("y", elem, ["n", 2])
    nodes = [helper.make_node("Identity", [names[0]], ["y"], name=node_name)]
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, [out]), opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture(params=MAJORS, ids=lambda major: f"trt{major}")
def fake_trt(request, monkeypatch):
    fake = FakeTRT(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "require_cuda", lambda device=None: torch.device("cpu"))
    return fake


def _calls(fake, kind):
    return [c for c in fake.calls if c[0] == kind]


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16], ids=["fp32-graph", "fp16-graph"])
def test_build_engine_is_strongly_typed_with_profile_and_timing_cache(fake_trt, tmp_path, elem):
    graph = _tiny_graph(tmp_path / "r.onnx", ["images", "k0"], elem)
    shapes = {"images": ((1, 2), (1, 2), (2, 2)), "k0": ((1, 2), (4, 2), (8, 2))}
    cache = tmp_path / "timing" / "t.cache"
    messages = []
    plan = tensorrt_build.build_engine(graph, shapes, timing_cache_path=cache, workspace_bytes=1 << 30,
                                       progress=messages.append)
    # the stand-in's plan lists the profile it was built with
    assert json.loads(plan)["inputs"] == {n: [list(d) for d in s] for n, s in shapes.items()}
    # strongly typed, with the flag's bit as the real enum has it: 1 in TensorRT 10, 0 in 11
    strongly_typed_bit = {10: 1, 11: 0}[int(fake_trt.__version__.split(".")[0])]
    assert _calls(fake_trt, "network") == [("network", 1 << strongly_typed_bit)]
    build = _calls(fake_trt, "build")[0]
    assert build[1] == set()  # no builder precision flags: precision comes from the graph
    assert build[2] == [shapes] and build[3] == b""
    assert cache.read_bytes() == b"+tuned"
    assert ("pool", fake_trt.MemoryPoolType.WORKSPACE, 1 << 30) in fake_trt.calls
    assert any("strongly typed" in m for m in messages)
    assert any("Building engine" in m for m in messages) and any("built r.onnx" in m for m in messages)
    # the second build starts from the saved timing cache
    tensorrt_build.build_engine(graph, shapes, timing_cache_path=cache)
    assert _calls(fake_trt, "build")[1][3] == b"+tuned"


def test_build_engine_errors(fake_trt, tmp_path, monkeypatch):
    graph = _tiny_graph(tmp_path / "r.onnx", ["images", "k0"])
    shapes = {"images": ((1, 2), (1, 2), (2, 2)), "k0": ((1, 2), (4, 2), (8, 2))}
    with pytest.raises(tensorrt_build.TensorRTBuildError, match=r"no profile shapes given for inputs \['k0'\]"):
        tensorrt_build.build_engine(graph, {"images": shapes["images"]})
    with pytest.raises(tensorrt_build.TensorRTBuildError, match="does not exist"):
        tensorrt_build.build_engine(tmp_path / "missing.onnx", {})
    # TensorRT's own checks of the profile: set_shape raises, add_optimization_profile returns -1
    with pytest.raises(tensorrt_build.TensorRTBuildError,
                       match=r"rejected the profile shapes of r.onnx input k0 "
                             r"\(min \(1, 2\), opt \(9, 2\), max \(8, 2\)\)"):
        tensorrt_build.build_engine(graph, {**shapes, "k0": ((1, 2), (9, 2), (8, 2))})
    version = fake_trt.__version__.split(".")[0]
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT(int(version), reject_profiles=True))
    with pytest.raises(tensorrt_build.TensorRTBuildError,
                       match=r"TensorRT rejected the optimisation profile for r.onnx \(images \(1, 2\)..\(2, 2\);"):
        tensorrt_build.build_engine(graph, shapes)
    # the parser's error object, as one line: node, operator, description, code
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT(int(version), parse_ok=False))
    with pytest.raises(tensorrt_build.TensorRTBuildError,
                       match=r"ONNX parser rejected r.onnx: node 0 \(Identity\): "
                             r"Unsupported operator \[UNSUPPORTED_NODE\]"):
        tensorrt_build.build_engine(graph, shapes)
    named = _tiny_graph(tmp_path / "n.onnx", ["images"], node_name="/unet/Mystery")
    with pytest.raises(tensorrt_build.TensorRTBuildError,
                       match=r"/unet/Mystery \(Identity\): Unsupported operator \[UNSUPPORTED_NODE\]"):
        tensorrt_build.build_engine(named, shapes)


def test_build_engines_uses_and_refreshes_the_cache(fake_trt, engines, tiny_bundle, monkeypatch):
    bundle = load_bundle(tiny_bundle)
    monkeypatch.setattr(tensorrt_build.engine_cache, "cuda_identity", lambda device=None: ("NVIDIA H100", "9.0"))
    num_layers = len(bundle.layer_shapes)
    names = {"restorer": ["images", "noise"] + [f"{c}{i}" for i in range(num_layers) for c in "kv"], "enroller": ["refs", "noise"]}
    for graph, inputs in names.items():  # stand-ins for the exported fp16 graphs, committed in the cache
        key = engine_cache.onnx_key(graph, bundle.bundle_id, "fp16")
        _tiny_graph(key.path("onnx", _folder(engines, key)), inputs, TensorProto.FLOAT16)
        engine_cache.write_sidecar(key.path("onnx", _folder(engines, key)), key)
    messages = []
    plans = tensorrt_build.build_engines(tiny_bundle, engines, progress=messages.append)
    assert set(plans) == {"restorer", "enroller"}
    for graph, path in plans.items():
        target = engine_cache.BuildTarget(fake_trt.__version__, "NVIDIA H100", "9.0")
        key = bt.engine_key(graph, bundle.bundle_id, "fp16", DEFAULT_PROFILE, target)
        folder = _folder(engines, key)
        assert path == key.path("plan", folder) and engine_cache.find_artifact(key, "plan", folder, verify_hash=True) == path
        assert list(json.loads(path.read_bytes())["inputs"]) == names[graph]
    restorer_build = _calls(fake_trt, "build")[0]
    assert restorer_build[2][0]["k0"] == tensorrt_build.profile_shapes(bundle, "restorer", DEFAULT_PROFILE)["k0"]
    assert len(list(engine_cache.timing_cache_dir(engines).glob("*.cache"))) == 1
    # cached: no second build
    builds = len(_calls(fake_trt, "build"))
    assert tensorrt_build.build_engines(tiny_bundle, engines, progress=messages.append) == plans
    assert len(_calls(fake_trt, "build")) == builds
    assert any("is cached" in m for m in messages)
    # a TensorRT upgrade: the old plans are stale, removed and rebuilt under new names
    fake_trt.__version__ = fake_trt.__version__.split(".")[0] + ".99.0"
    fresh = tensorrt_build.build_engines(tiny_bundle, engines, progress=messages.append)
    assert all(not p.exists() for p in plans.values()) and all(p.exists() for p in fresh.values())
    assert any("removed stale engine" in m for m in messages)


# ------------------------------------------------------------------------------------------ real TensorRT


@pytest.fixture(scope="module")
def trt_engines(tiny_bundle, tmp_path_factory):
    engines = tmp_path_factory.mktemp("trt-home") / "engines"
    return tensorrt_build.build_engines(tiny_bundle, engines, precision="fp16", progress=print)


@needs_tensorrt
def test_tensorrt_matches_torch_fp16(trt_engines, tiny_bundle):
    engines = next(iter(trt_engines.values())).parents[1]
    trt_r = load_restorer(tiny_bundle, backend="tensorrt", device="cuda", dtype=torch.float16, engines=engines)
    ref_r = load_restorer(tiny_bundle, backend="torch", device="cuda", dtype=torch.float16)
    S = trt_r.crop_size
    g = torch.Generator().manual_seed(5)
    for n in (1, 4):
        refs = (torch.rand(n, 3, S, S, generator=g) * 2 - 1).cuda().half()
        p_trt, p_ref = trt_r.enroll(refs), ref_r.enroll(refs)
        for a, b in zip(p_trt.keys, p_ref.keys):
            assert (a.float() - b.float()).abs().max().item() < 5e-2
        for batch in (1, 2, 5):  # 5: over the profile's maximum, run in chunks
            x = (torch.rand(batch, 3, S, S, generator=g) * 2 - 1).cuda().half()
            got, want = trt_r.restore(x, p_ref), ref_r.restore(x, p_ref)
            assert got.device.type == "cuda" and got.shape == x.shape
            assert (got.float() - want.float()).abs().max().item() < 5e-2
            assert torch.equal(trt_r.restore(x, p_ref), got)  # K/V stay bound across frames


@needs_tensorrt
def test_tensorrt_engine_cache_is_reused(trt_engines, tiny_bundle):
    engines = next(iter(trt_engines.values())).parents[1]
    messages = []
    assert tensorrt_build.build_engines(tiny_bundle, engines, precision="fp16", progress=messages.append) == trt_engines
    assert sum("is cached" in m for m in messages) == 2
