"""The backends package: the one registry of names behind every --backend, the Backend interface the three
backends share, `select`, the one choice of backend, device and dtype, and each backend against torch
(onnxruntime on the exported graphs, TensorRT on a stand-in engine, torch's CUDA graph)."""

import inspect
import json
import sys
import types

import pytest
import torch

from instantrestore.export import tensorrt_build
from instantrestore.export.onnx_export import export_onnx
from instantrestore.plugin.commands import bench
from instantrestore.plugin.cli import build_parser
from instantrestore.runtime import engine_cache, files, load_bundle, load_restorer
from instantrestore.runtime.backends import tensorrt_backend as bt
from instantrestore.runtime.backends import (
    BACKENDS,
    CHOICES,
    Backend,
    BackendError,
    BoundReferences,
    backend_class,
    onnxruntime_backend,
    select,
    tensorrt_backend,
)
from instantrestore.runtime.backends.onnxruntime_backend import (
    OnnxGraphNotFoundError,
    OnnxRuntimeBackend,
    OnnxRuntimeError,
    OnnxRuntimeOptions,
    choose_providers,
)
from instantrestore.runtime.backends.torch_backend import TorchBackend
from instantrestore.runtime.graphs import DEFAULT_PROFILE

from tests.support.tensorrt_fakes import MAJORS, FakeTRT, _write_plan


def _backend_choices(parser) -> list:
    """The --backend choices of each subcommand that has one."""
    found = []
    for action in parser._actions:
        if getattr(action, "choices", None) and isinstance(action.choices, dict):  # the subcommands
            for sub in action.choices.values():
                found += [a.choices for a in sub._actions if "--backend" in a.option_strings]
    return found


def _export_fp32_graphs(engines, bundle):
    """Stand-ins for exported fp32 graphs, committed in the engine cache."""
    folder = engine_cache.bundle_cache_dir(engines, bundle.bundle_id)
    for graph in ("restorer", "enroller"):
        key = engine_cache.onnx_key(graph, bundle.bundle_id, "fp32")
        files.atomic_write_bytes(key.path("onnx", folder), b"graph")
        engine_cache.write_sidecar(key.path("onnx", folder), key)


# ------------------------------------------------------------------------------------------ registry


def test_the_registry_is_every_commands_backend_choices():
    assert CHOICES == ("auto", *BACKENDS) == ("auto", "tensorrt", "onnxruntime", "torch")
    choices = _backend_choices(build_parser())
    assert len(choices) >= 3 and all(tuple(c) == CHOICES for c in choices)  # camera, video, batch, bench, ...
    assert bench.CHOICES is CHOICES
    with pytest.raises(BackendError, match="unknown backend 'cuda'; choose one of: auto, tensorrt, onnxruntime, torch"):
        backend_class("cuda")


def test_backends_are_imported_on_first_use_only():
    assert backend_class("torch") is TorchBackend
    assert {entry.builds for entry in BACKENDS.values()} == {"engines", "graphs", None}


# ------------------------------------------------------------------------------------------ the interface


def test_the_torch_backend_is_a_backend(tiny_bundle):
    backend = TorchBackend(load_bundle(tiny_bundle))
    assert isinstance(backend, Backend)
    assert (backend.name, backend.device, backend.dtype) == ("torch", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("cls", [tensorrt_backend.TensorRTBackend, onnxruntime_backend.OnnxRuntimeBackend,
                                 TorchBackend])
def test_every_backend_has_the_protocols_methods(cls):
    """TensorRT cannot be installed here: its class is checked against the Protocol's signatures."""
    for method in ("enroll", "restore"):
        want = inspect.signature(getattr(Backend, method))
        got = inspect.signature(getattr(cls, method))
        assert list(got.parameters) == list(want.parameters), (cls.__name__, method)
        assert got.return_annotation in (want.return_annotation, "list", "torch.Tensor"), (cls.__name__, method)
    assert isinstance(cls.name, str)


def test_bound_references_notice_another_profile():
    bound = BoundReferences(2)
    a, b = [torch.zeros(1), torch.ones(1)], [torch.zeros(1), torch.ones(1)]
    assert bound.changed(a) and not bound.changed(a) and not bound.changed(a)
    assert bound.changed(b) and bound.changed(a)
    a[0] = torch.zeros(1)  # the same list holding another tensor: bound again
    assert bound.changed(a)
    with pytest.raises(ValueError, match="expected 2 K/V tensors, got 0"):
        bound.changed([])


# ------------------------------------------------------------------------------------------ select


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only choice")
def test_auto_choice_on_a_cpu_machine(tmp_path, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    engines = tmp_path / "engines"
    choice = select(bundle, "auto", engines=engines)
    assert (choice.backend, choice.device, choice.dtype, choice.build) == ("torch", "cpu", torch.float32, False)
    assert "tensorrt:" in choice.reason and "onnxruntime-cpu:" in choice.reason
    _export_fp32_graphs(engines, bundle)  # pretend the fp32 graphs were exported
    choice = select(bundle, "auto", engines=engines)
    assert (choice.backend, choice.device, choice.dtype) == ("onnxruntime", "cpu", torch.float32)


def test_the_api_never_builds_and_the_plugin_builds_tensorrt_engines(tiny_bundle, monkeypatch):
    """The one difference between load_restorer's "auto" and the commands': can_build."""
    monkeypatch.setattr(tensorrt_backend, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_ready", lambda bundle, **options: (False, "no engines built"))
    bundle = load_bundle(tiny_bundle)
    assert select(bundle, "auto", can_build=True).backend == "tensorrt"
    choice = select(bundle, "auto")
    assert choice.backend != "tensorrt" and choice.reason.startswith("tensorrt: no engines built")


def test_an_explicit_gpu_index_is_kept(tiny_bundle, monkeypatch):
    """--device cuda:1 runs on cuda:1 whichever backend auto picks, not on cuda:0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT
    bundle = load_bundle(tiny_bundle)
    monkeypatch.setattr(onnxruntime_backend, "available_providers", lambda: ["CPUExecutionProvider"])
    choice = select(bundle, "auto", "cuda:1", engines=None, can_build=True)
    assert (choice.backend, choice.device, choice.dtype) == ("torch", "cuda:1", torch.float16)
    monkeypatch.setattr(onnxruntime_backend, "available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime_backend, "onnx_ready", lambda bundle, dtype, engines: (True, ""))
    choice = select(bundle, "auto", "cuda:1")
    assert (choice.backend, choice.device, choice.dtype) == ("onnxruntime", "cuda:1", torch.float16)
    assert onnxruntime_backend.choose_providers(choice.device)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    monkeypatch.setattr(tensorrt_backend, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_ready", lambda bundle, **options: (False, "no engines built"))
    choice = select(bundle, "auto", "cuda:1", can_build=True)
    assert (choice.backend, choice.device, choice.build) == ("tensorrt", "cuda:1", True)
    assert select(bundle, "torch", "cuda:1").device == "cuda:1"


def test_a_backend_asked_for_without_a_device_runs_on_its_own(tiny_bundle, monkeypatch):
    """TensorRT runs on CUDA only: asked for with no device, it is CUDA in fp16 even where torch's default is the
    CPU (here TensorRT and the GPU are stand-ins); onnxruntime takes the machine's default."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(bt, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bundle = load_bundle(tiny_bundle)
    choice = select(bundle, "tensorrt")
    assert (choice.backend, choice.device, choice.dtype, choice.build) == ("tensorrt", "cuda", torch.float16, True)
    choice = select(bundle, "onnxruntime")
    assert (choice.backend, choice.device, choice.dtype, choice.build) == ("onnxruntime", "cpu", torch.float32, True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_a_gpu_device_without_a_gpu_is_refused(tiny_bundle):
    with pytest.raises(BackendError, match=r"--device cuda:1: no CUDA GPU is visible to torch"):
        select(load_bundle(tiny_bundle), "auto", "cuda:1")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_graph_matches_eager_and_rebinds_profiles(tmp_path):
    from instantrestore.export.random_bundle import write_random_bundle
    from instantrestore.runtime import load_restorer

    bundle = write_random_bundle("tiny", tmp_path / "b", dtype="float16")
    fast = load_restorer(bundle, device="cuda", dtype="float16")
    assert fast.backend.cuda_graph
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, 128, 128, generator=g) * 2 - 1).cuda().half()
    profiles = [fast.enroll((torch.rand(n, 3, 128, 128, generator=g) * 2 - 1).cuda().half()) for n in (4, 2)]
    for profile in profiles + profiles[:1]:  # switching profiles rebinds the graph's K/V
        graph_out = fast.restore(images, profile)
        fast.backend.cuda_graph = False
        eager_out = fast.restore(images, profile)
        fast.backend.cuda_graph = True
        assert (graph_out.float() - eager_out.float()).abs().max().item() < 2e-2
    assert (fast.restore(images, profiles[0]) - fast.restore(images, profiles[1])).abs().max().item() > 1e-3


TOL = 1e-4


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
    from tests.support.reference import ReferenceInstantRestore

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
    bound = Restorer(bundle, OnnxRuntimeBackend(bundle, onnx_home, device="cpu", dtype=torch.float32,
                                                options=OnnxRuntimeOptions(io_binding=True)))
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


# ------------------------------------------------------------------------------------------ missing pieces


def test_missing_tensorrt_has_a_clear_error(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError, even where installed
    with pytest.raises(bt.TensorRTUnavailableError, match=r"TensorRT is not available.*from a checkout with `pip install -e '\.\[tensorrt\]'`"):
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


def test_old_tensorrt_is_refused_and_a_newer_major_is_named(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(bt.TensorRTUnavailableError, match="8.6.1 is too old"):
        bt.import_tensorrt()
    assert [bt.supported(v) for v in ("9.3.0", "10.0.1", "10.16.1.11", "11.4.0.106", "12.0.0")] == [
        False, True, True, True, False]
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="12.0.1"))
    with caplog.at_level("WARNING"):
        assert bt.import_tensorrt().__version__ == "12.0.1"  # tried, with a warning
    assert "TensorRT 12.0.1 is newer than this code supports (10.x to 11.x)" in caplog.text


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


# ------------------------------------------------------------- the runtime against a stand-in engine


@pytest.fixture(params=MAJORS, ids=lambda major: f"trt{major}")
def fake_runtime(request, engines, monkeypatch, tiny_bundle):
    """TensorRT stand-in (10 or 11, as recorded) with plans in the cache for the tiny bundle, on the CPU."""
    bundle = load_bundle(tiny_bundle)
    fake = FakeTRT(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
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
    return bundle, fake.engines, engines


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
    with pytest.raises(bt.TensorRTError, match=r"restorer input images shape \(1, 3, \d+, \d+\) is outside the "
                                               r"engine's profile \(1, 3, \d+, \d+\)..\(4, 3, \d+, \d+\)"):
        runner.bind_input("images", torch.zeros(1, 3, S + 8, S + 8))
    with pytest.raises(ValueError, match="K/V tensors"):
        backend.restore(torch.zeros(1, 3, S, S), torch.zeros(1, 4, 1, 1), [])
    # an engine whose inputs do not fit the bundle (e.g. exported from another one) is refused
    monkeypatch.setattr(bundle, "config", {**bundle.config, "shared_layers": bundle.config["shared_layers"][:-1]})
    with pytest.raises(bt.TensorRTError, match="do not match"):
        bt.TensorRTBackend(bundle, folder)


def test_runtime_reports_a_refused_tensor_address(fake_runtime, monkeypatch):
    bundle, _, folder = fake_runtime
    major = int(sys.modules["tensorrt"].__version__.split(".")[0])
    # set_tensor_address returns False (the real call's failure signal) for the restorer's images
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT(major, refuse_addresses=("images",)))
    backend = bt.TensorRTBackend(bundle, folder)
    S = bundle.crop_size
    with pytest.raises(bt.TensorRTError, match="TensorRT refused the device address of restorer tensor images"):
        backend._runners["restorer"].bind_input("images", torch.zeros(1, 3, S, S))
