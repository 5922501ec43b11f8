"""TensorRT: engine cache keys, invalidation of stale/foreign engines, profile shapes and the errors when
TensorRT or a GPU is missing run everywhere; the engine build is exercised against a recording stand-in
for the tensorrt module; real builds and parity run only where tensorrt imports and a GPU exists."""

import json
import sys
import types

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from instantrestore.export import tensorrt_build
from instantrestore.plugin import home as state
from instantrestore.runtime import engine_cache, files, load_bundle, load_restorer
from instantrestore.runtime.backends import tensorrt_backend as bt
from instantrestore.runtime.graphs import DEFAULT_PROFILE, ShapeProfile


def _have_tensorrt():
    try:
        bt.import_tensorrt()
    except bt.TensorRTUnavailableError:
        return False
    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(not _have_tensorrt(), reason="needs the tensorrt package and a CUDA GPU")

BID = "ab" * 32
OTHER_BID = "cd" * 32


@pytest.fixture
def engines(tmp_path):
    """An engine cache folder, as the plugin passes its `<state>/engines`."""
    return tmp_path / "home" / "engines"


def _key(graph="restorer", bundle_id=BID, precision="fp16", profile=None, trt="10.3.0", gpu="NVIDIA H100", cc="9.0"):
    return bt.engine_key(graph, bundle_id, precision, profile or DEFAULT_PROFILE, trt, gpu, cc)


def _folder(engines, key):
    return engine_cache.bundle_cache_dir(engines, key.bundle_id)


def _write_plan(engines, key, data=b"plan-bytes"):
    path = key.path(bt.PLAN_EXT, _folder(engines, key))
    files.atomic_write_bytes(path, data)
    engine_cache.write_sidecar(path, key)
    return path


# ------------------------------------------------------------------------------------------ state folder


def test_state_dir_env_and_platform_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(state.HOME_ENV, str(tmp_path / "x"))
    assert state.state_dir() == (tmp_path / "x").resolve()
    assert state.engines_dir() == (tmp_path / "x").resolve() / "engines"
    monkeypatch.delenv(state.HOME_ENV)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(state.Path, "home", classmethod(lambda cls: tmp_path / "user"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert state.state_dir() == tmp_path / "user" / ".local" / "share" / "instantrestore"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert state.state_dir() == tmp_path / "user" / "Library" / "Application Support" / "instantrestore"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert state.state_dir() == tmp_path / "Local" / "instantrestore"


# ------------------------------------------------------------------------------------------ profiles


def test_shape_profile_validation():
    p = ShapeProfile(batch=(1, 1, 2), refs=(1, 4, 8))
    assert p.tag == "b1-1-2_r1-4-8"
    assert p.covers(2, 8) and not p.covers(3, 1) and not p.covers(1, 9)
    assert ShapeProfile.from_dict(p.to_dict()) == p
    for bad in (dict(batch=(2, 1, 4)), dict(refs=(0, 1, 2)), dict(refs=(1, 4, 9)), dict(batch=(1, 2))):
        with pytest.raises(ValueError):
            ShapeProfile(**bad)


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


# ------------------------------------------------------------------------------------------ cache keys


def test_engine_keys_cover_every_field(engines):
    base = _key()
    variants = [
        _key(bundle_id=OTHER_BID), _key(precision="fp32"), _key(trt="10.4.0"), _key(gpu="NVIDIA L4"),
        _key(cc="8.9"), _key(profile=ShapeProfile(batch=(1, 1, 2))), _key(graph="enroller"),
    ]
    digests = {base.digest} | {k.digest for k in variants}
    assert len(digests) == len(variants) + 1
    names = {base.filename("plan")} | {k.filename("plan") for k in variants}
    assert len(names) == len(variants) + 1
    assert bt.engine_key("restorer", BID, torch.float16, DEFAULT_PROFILE, "10.3.0", "NVIDIA H100", (9, 0)) == base
    assert base.path("plan", _folder(engines, base)).parent == engine_cache.bundle_cache_dir(engines, BID)
    assert base.filename("plan").startswith("trt-restorer-fp16-b1-1-4_r1-4-8-")
    with pytest.raises(engine_cache.ArtifactError):
        _key(bundle_id="not-a-hash")
    with pytest.raises(ValueError):
        engine_cache.ArtifactKey(kind="trt-restorer", bundle_id=BID, precision="fp16")  # no GPU/TRT fields


def test_valid_engine_is_found(engines):
    key = _key()
    path = _write_plan(engines, key)
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) == path
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key), verify_hash=True) == path
    assert bt.find_engine(key, engines) == path
    meta = json.loads(engine_cache.sidecar_path(path).read_text())
    assert meta["key"]["gpu_name"] == "NVIDIA H100" and meta["files"][path.name]["size"] == len(b"plan-bytes")


def test_stale_engine_is_reported_and_pruned(engines):
    old = _write_plan(engines, _key(trt="10.0.1"))
    new_key = _key(trt="10.3.0")
    assert engine_cache.find_artifact(new_key, "plan", _folder(engines, new_key)) is None
    report = engine_cache.inspect_slot(new_key, "plan", _folder(engines, new_key))
    assert [(p, s) for p, s, _ in report] == [(old, engine_cache.STALE)]
    with pytest.raises(bt.EngineNotFoundError) as err:
        bt.find_engine(new_key, engines)
    msg = str(err.value)
    assert "instantrestore export --tensorrt" in msg and "stale" in msg and "10.0.1" in msg
    removed = engine_cache.prune_slot(new_key, "plan", _folder(engines, new_key))
    assert [p for p, _ in removed] == [old]
    assert not old.exists() and not engine_cache.sidecar_path(old).exists()


def test_foreign_engine_is_never_loaded_nor_deleted(engines):
    other_gpu = _write_plan(engines, _key(gpu="NVIDIA L4", cc="8.9"))
    key = _key()
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None
    assert [s for _, s, _ in engine_cache.inspect_slot(key, "plan", _folder(engines, key))] == [engine_cache.FOREIGN]
    assert engine_cache.prune_slot(key, "plan", _folder(engines, key)) == []
    assert other_gpu.exists()  # valid for the other GPU in this machine
    # A plan renamed onto our key's file name is still foreign: the sidecar says whose it is.
    ours = key.path("plan", _folder(engines, key))
    other_gpu.rename(ours)
    engine_cache.sidecar_path(other_gpu).rename(engine_cache.sidecar_path(ours))
    assert engine_cache.classify(ours, key)[0] == engine_cache.FOREIGN
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None
    # ... and so is one made for another bundle
    path = _write_plan(engines, key)
    meta = json.loads(engine_cache.sidecar_path(path).read_text())
    meta["key"]["bundle_id"] = OTHER_BID
    engine_cache.sidecar_path(path).write_text(json.dumps(meta))
    status, reason = engine_cache.classify(path, key)
    assert status == engine_cache.FOREIGN and "bundle_id" in reason


def test_corrupt_or_uncommitted_engine_is_rejected(engines):
    key = _key()
    path = _write_plan(engines, key)
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) == path  # verified, and the verification remembered
    with open(path, "r+b") as f:  # four bytes changed in place, after that successful load
        f.seek(2)
        f.write(b"zzzz")
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None  # loading checks the SHA-256 of the sidecar
    assert engine_cache.classify(path, key)[0] == engine_cache.CORRUPT
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key), verify_hash=False) == path  # the size alone cannot tell
    path.write_bytes(b"short")
    assert engine_cache.classify(path, key)[0] == engine_cache.CORRUPT
    engine_cache.sidecar_path(path).unlink()  # a write that never committed
    assert engine_cache.classify(path, key) == (engine_cache.CORRUPT, f"{path.name} has no readable sidecar (interrupted write?)")
    assert [p for p, _ in engine_cache.prune_slot(key, "plan", _folder(engines, key))] == [path]
    assert engine_cache.classify(path, key)[0] == engine_cache.MISSING


def test_format_bump_makes_engines_stale(engines):
    key = _key()
    path = _write_plan(engines, key)
    newer = engine_cache.ArtifactKey(**{**key.__dict__, "format": engine_cache.ARTIFACT_FORMAT + 1})
    assert engine_cache.find_artifact(newer, "plan", _folder(engines, newer)) is None
    assert engine_cache.classify(path, newer)[0] == engine_cache.STALE


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a" / "engine.plan"
    files.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("build crashed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["engine.plan"]  # no temp file left


# ------------------------------------------------------------------------------------------ missing pieces


def test_missing_tensorrt_has_a_clear_error(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError, even where installed
    with pytest.raises(bt.TensorRTUnavailableError, match=r"TensorRT is not available.*pip install 'instantrestore\[tensorrt\]'"):
        bt.import_tensorrt()
    with pytest.raises(bt.TensorRTUnavailableError, match="--backend onnxruntime"):
        load_restorer(tiny_bundle, backend="tensorrt", device="cuda", dtype=torch.float16)
    onnx_path = tmp_path / "g.onnx"
    onnx_path.write_bytes(b"")
    with pytest.raises(bt.TensorRTUnavailableError):
        tensorrt_build.build_engine(onnx_path, {})
    with pytest.raises(bt.TensorRTUnavailableError):
        tensorrt_build.build_engines(tiny_bundle, tmp_path / "engines")
    ok, why = bt.tensorrt_ready(load_bundle(tiny_bundle))
    assert not ok and "TensorRT is not available" in why


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(bt.TensorRTUnavailableError, match="8.6.1 is too old"):
        bt.import_tensorrt()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_tensorrt_without_gpu_has_a_clear_error(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    with pytest.raises(bt.TensorRTUnavailableError, match="needs an NVIDIA GPU"):
        load_restorer(tiny_bundle, backend="tensorrt", device="cuda", dtype=torch.float16)


def test_missing_engine_tells_how_to_build(engines, monkeypatch, tiny_bundle):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(bt, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(engine_cache, "cuda_identity", lambda device=None: ("NVIDIA H100", "9.0"))
    with pytest.raises(bt.EngineNotFoundError, match=r"no TensorRT restorer engine .* run `instantrestore export --tensorrt`"):
        bt.TensorRTBackend(load_bundle(tiny_bundle), engines)


# ---------------------------------------------------------------- the build against a recording stand-in


class _FakeTRT(types.ModuleType):
    """Just enough of the TensorRT 10 Python API to run build_engine, recording what it is asked."""

    def __init__(self, version="10.3.0", parse_ok=True):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls = []
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class IProgressMonitor:
            def __init__(self):
                pass

        self.ILogger, self.IProgressMonitor = ILogger, IProgressMonitor
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class Input:
            def __init__(self, name):
                self.name = name

        class Network:
            def __init__(self, flags):
                self.flags, self.inputs = flags, []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class Parser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                model = onnx.load(path, load_external_data=False)
                self.network.inputs = [Input(i.name) for i in model.graph.input]
                fake.calls.append(("parse", path))
                return parse_ok

            def get_error(self, i):
                return "In node 0 (Unique): UNSUPPORTED_NODE"

        class TimingCache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+tuned"

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.progress_monitor, self.cache = [], [], None, None

            def set_flag(self, flag):
                self.flags.append(flag)

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def create_timing_cache(self, data):
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build", config.flags, [p.shapes for p in config.profiles], config.cache.data))
                if config.progress_monitor is not None:
                    m = config.progress_monitor
                    m.phase_start("Building engine", None, 2)
                    m.phase_start("Tactic search", "Building engine", 10)
                    m.step_complete("Tactic search", 0)
                    m.phase_finish("Tactic search")
                    m.step_complete("Building engine", 1)
                    m.phase_finish("Building engine")
                return b"PLAN:" + ",".join(i.name for i in network.inputs).encode()

        self.Builder, self.OnnxParser = Builder, Parser


def _tiny_graph(path, names, elem=TensorProto.FLOAT):
    inputs = [helper.make_tensor_value_info(n, elem, ["n", 2]) for n in names]
    out = helper.make_tensor_value_info("y", elem, ["n", 2])
    nodes = [helper.make_node("Identity", [names[0]], ["y"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, [out]), opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture
def fake_trt(monkeypatch):
    fake = _FakeTRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(bt._TRTLogger, "_instance", None)
    return fake


def test_build_engine_sets_profile_precision_and_timing_cache(fake_trt, tmp_path):
    graph = _tiny_graph(tmp_path / "r.onnx", ["images", "k0"])
    shapes = {"images": ((1, 2), (1, 2), (2, 2)), "k0": ((1, 2), (4, 2), (8, 2))}
    cache = tmp_path / "timing" / "t.cache"
    messages = []
    plan = tensorrt_build.build_engine(graph, shapes, fp16=True, timing_cache_path=cache, workspace_bytes=1 << 30,
                                       progress=messages.append)
    assert plan == b"PLAN:images,k0"
    network = [c for c in fake_trt.calls if c[0] == "network"][0]
    assert network[1] == 0  # fp32 graph: weakly typed, fp16 allowed by the builder flag
    build = [c for c in fake_trt.calls if c[0] == "build"][0]
    assert build[1] == ["FP16"] and build[2] == [shapes] and build[3] == b""
    assert cache.read_bytes() == b"+tuned"
    assert ("pool", "WORKSPACE", 1 << 30) in fake_trt.calls
    assert any("Building engine" in m for m in messages) and any("built r.onnx" in m for m in messages)
    # the second build starts from the saved timing cache
    tensorrt_build.build_engine(graph, shapes, timing_cache_path=cache)
    assert [c for c in fake_trt.calls if c[0] == "build"][1][3] == b"+tuned"


def test_build_engine_fp16_graph_is_strongly_typed(fake_trt, tmp_path):
    graph = _tiny_graph(tmp_path / "r16.onnx", ["images"], elem=TensorProto.FLOAT16)
    tensorrt_build.build_engine(graph, {"images": ((1, 2), (1, 2), (2, 2))})
    assert [c for c in fake_trt.calls if c[0] == "network"][0][1] == 1 << 1
    assert [c for c in fake_trt.calls if c[0] == "build"][0][1] == []  # precisions come from the graph


def test_build_engine_errors(fake_trt, tmp_path, monkeypatch):
    graph = _tiny_graph(tmp_path / "r.onnx", ["images", "k0"])
    with pytest.raises(tensorrt_build.TensorRTBuildError, match=r"no profile shapes given for inputs \['k0'\]"):
        tensorrt_build.build_engine(graph, {"images": ((1, 2), (1, 2), (2, 2))})
    with pytest.raises(tensorrt_build.TensorRTBuildError, match="does not exist"):
        tensorrt_build.build_engine(tmp_path / "missing.onnx", {})
    bad = _FakeTRT(parse_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", bad)
    with pytest.raises(tensorrt_build.TensorRTBuildError, match="UNSUPPORTED_NODE"):
        tensorrt_build.build_engine(graph, {})


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
        key = bt.engine_key(graph, bundle.bundle_id, "fp16", DEFAULT_PROFILE, "10.3.0", "NVIDIA H100", "9.0")
        folder = _folder(engines, key)
        assert path == key.path("plan", folder) and engine_cache.find_artifact(key, "plan", folder, verify_hash=True) == path
        assert path.read_bytes() == b"PLAN:" + ",".join(names[graph]).encode()
    restorer_build = [c for c in fake_trt.calls if c[0] == "build"][0]
    assert restorer_build[2][0]["k0"] == tensorrt_build.profile_shapes(bundle, "restorer", DEFAULT_PROFILE)["k0"]
    assert len(list(engine_cache.timing_cache_dir(engines).glob("*.cache"))) == 1
    # cached: no second build
    builds = len([c for c in fake_trt.calls if c[0] == "build"])
    assert tensorrt_build.build_engines(tiny_bundle, engines, progress=messages.append) == plans
    assert len([c for c in fake_trt.calls if c[0] == "build"]) == builds
    assert any("is cached" in m for m in messages)
    # a TensorRT upgrade: the old plans are stale, removed and rebuilt under new names
    fake_trt.__version__ = "10.4.0"
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


# ------------------------------------------------------------- the runtime against a stand-in engine


class _FakeEngine:
    """A plan is JSON: {"inputs": {name: [[min], [opt], [max]]}, "outputs": {...}, "kind": ...}. Executing
    copies `images` into `restored` through the bound raw addresses (so wrong addresses show) and zeroes
    the enroller's outputs."""

    def __init__(self, trt, spec):
        self.trt, self.spec = trt, spec
        self.names = list(spec["inputs"]) + list(spec["outputs"])
        self.contexts = []

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name in self.spec["inputs"] else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.trt.float16

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return self.spec["inputs"][name]

    def create_execution_context(self):
        ctx = _FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class _FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.log = engine, {}, {}, []

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.spec["inputs"][name]
        if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        self.log.append(("shape", name, tuple(shape)))
        return True

    def get_tensor_shape(self, name):
        spec = self.engine.spec
        if name == "restored":
            return self.shapes.get("images", (-1, 3, 8, 8))
        n = self.shapes.get("refs", (-1,))[0]
        return (n, *spec["outputs"][name])

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        self.log.append(("address", name))

    def execute_async_v3(self, stream):
        import ctypes
        import math

        self.log.append(("execute", stream))
        if "restored" in self.addresses:
            nbytes = math.prod(self.shapes["images"]) * 2
            ctypes.memmove(self.addresses["restored"], self.addresses["images"], nbytes)
        else:
            n = self.shapes["refs"][0]
            for name, (t, c) in self.engine.spec["outputs"].items():
                ctypes.memset(self.addresses[name], 0, n * t * c * 2)
        return True


@pytest.fixture
def fake_runtime(engines, monkeypatch, tiny_bundle):
    """TensorRT stand-in with plans in the cache for the tiny bundle, on the CPU."""
    bundle = load_bundle(tiny_bundle)
    fake = _FakeTRT()
    fake.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    fake.float16, fake.float32, fake.int32, fake.int64, fake.bool, fake.int8, fake.uint8 = (
        "f16", "f32", "i32", "i64", "b", "i8", "u8")
    loaded = []

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            loaded.append(_FakeEngine(fake, json.loads(plan)))
            return loaded[-1]

    fake.Runtime = Runtime
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(bt._TRTLogger, "_instance", None)
    monkeypatch.setattr(bt, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(engine_cache, "cuda_identity", lambda device=None: ("NVIDIA H100", "9.0"))
    monkeypatch.setattr(bt.EngineRunner, "_stream_handle", lambda self: 1234)
    profile = DEFAULT_PROFILE
    keys = bt.current_engine_keys(bundle.bundle_id, "fp16", profile)
    for graph in ("restorer", "enroller"):
        shapes = tensorrt_build.profile_shapes(bundle, graph, profile)
        outputs = ({"restored": None} if graph == "restorer"
                   else {f"{c}{i}": [t, ch] for i, (t, ch) in enumerate(bundle.layer_shapes) for c in "kv"})
        spec = {"inputs": {n: [list(s) for s in v] for n, v in shapes.items()}, "outputs": outputs}
        _write_plan(engines, keys[graph], json.dumps(spec).encode())
    return bundle, loaded, engines


def test_runtime_binds_references_once_per_profile(fake_runtime):
    from instantrestore.runtime.restorer import Restorer

    bundle, engines, folder = fake_runtime
    backend = bt.TensorRTBackend(bundle, folder)
    restorer = Restorer(bundle, backend)
    assert backend.max_batch == 4 and backend.max_references == 8
    assert len(engines) == 1  # the enroller plan is deserialised on first use only
    restorer_ctx = engines[0].contexts[0]
    S = bundle.crop_size
    g = torch.Generator().manual_seed(0)
    profile_a = restorer.enroll(torch.rand(2, 3, S, S, generator=g) * 2 - 1)
    profile_b = restorer.enroll(torch.rand(3, 3, S, S, generator=g) * 2 - 1)
    assert all(k.dtype == torch.float16 and k.shape[0] == 2 for k in profile_a.keys)
    assert len(engines) == 2
    restorer_ctx.log.clear()
    x = (torch.rand(1, 3, S, S, generator=g) * 2 - 1).half()
    for _ in range(3):
        y = restorer.restore(x, profile_a)
        assert torch.equal(y, x)  # the stand-in copies images -> restored through the bound addresses
    kv_binds = [e for e in restorer_ctx.log if e[0] == "address" and e[1][0] in "kv"]
    assert len(kv_binds) == 2 * len(bundle.layer_shapes)  # once for three frames
    assert [e for e in restorer_ctx.log if e[0] == "execute"] == [("execute", 1234)] * 3
    restorer_ctx.log.clear()
    restorer.restore(x, profile_b)
    assert len([e for e in restorer_ctx.log if e[0] == "address" and e[1][0] in "kv"]) == 2 * len(bundle.layer_shapes)
    # batches over the engine's maximum run in chunks; float32 input comes back as float32
    x6 = torch.rand(6, 3, S, S, generator=g) * 2 - 1
    y6 = restorer.restore(x6, profile_b)
    assert y6.dtype == torch.float32 and torch.allclose(y6, x6.half().float())
    assert [e[2][0] for e in restorer_ctx.log if e[0] == "shape" and e[1] == "images"][-2:] == [4, 2]


def test_runtime_rejects_shapes_outside_the_profile_and_mismatched_engines(fake_runtime, monkeypatch):
    bundle, engines, folder = fake_runtime
    backend = bt.TensorRTBackend(bundle, folder)
    runner = backend._runners["restorer"]
    S = bundle.crop_size
    with pytest.raises(bt.TensorRTError, match="outside the engine's profile"):
        runner.bind_input("images", torch.zeros(1, 3, S + 8, S + 8))
    with pytest.raises(ValueError, match="K/V tensors"):
        backend.restore(torch.zeros(1, 3, S, S), torch.zeros(1, 4, 1, 1), [])
    # an engine whose inputs do not fit the bundle (e.g. exported from another one) is refused
    monkeypatch.setattr(bundle, "config", {**bundle.config, "shared_layers": bundle.config["shared_layers"][:-1]})
    with pytest.raises(bt.TensorRTError, match="do not match"):
        bt.TensorRTBackend(bundle, folder)
