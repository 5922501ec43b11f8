"""The backends package: the one registry of names behind every --backend, the Backend interface the three
backends share, and `select`, the one choice of backend, device and dtype for the API and the commands."""

import inspect
import sys

import pytest
import torch

from instantrestore.plugin import bench, engine, home
from instantrestore.plugin.cli import build_parser
from instantrestore.runtime import engine_cache, files, load_bundle
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
from instantrestore.runtime.backends.torch_backend import TorchBackend


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


def test_auto_backend_on_a_cpu_machine_is_torch_fp32(tiny_bundle):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    choice = engine.choose_engine(home.resolve_bundle(tiny_bundle), "auto")
    assert (choice.backend, choice.device, choice.dtype) in (("torch", "cpu", torch.float32),
                                                             ("onnxruntime", "cpu", torch.float32))


def test_auto_with_an_explicit_cpu_device_uses_onnx_graphs_only_when_exported(tiny_bundle, monkeypatch):
    bundle = home.resolve_bundle(tiny_bundle)
    monkeypatch.setattr(onnxruntime_backend, "onnx_ready",
                        lambda bundle, dtype, engines: (False, "no fp32 ONNX graphs"))
    choice = engine.choose_engine(bundle, "auto", "cpu")
    assert (choice.backend, choice.device, choice.dtype, choice.reason) == ("torch", "cpu", torch.float32,
                                                                             "no fp32 ONNX graphs")
    monkeypatch.setattr(onnxruntime_backend, "onnx_ready", lambda bundle, dtype, engines: (True, ""))
    choice = engine.choose_engine(bundle, "auto", "cpu")
    assert (choice.backend, choice.device) == ("onnxruntime", "cpu")


def test_auto_falls_back_when_the_tensorrt_build_fails(tiny_bundle, monkeypatch):
    """A GPU machine with TensorRT whose engine build fails (out of memory, an unsupported GPU) still
    restores, on the next backend, and says why."""
    import instantrestore.export.tensorrt_build as tensorrt_build

    monkeypatch.setattr(tensorrt_backend, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_ready", lambda bundle, **options: (False, "no engines built"))

    def failing_build(bundle_dir, **options):
        raise RuntimeError("builder: out of GPU memory\nwhile tuning")

    monkeypatch.setattr(tensorrt_build, "build_engines", failing_build)
    bundle = home.resolve_bundle(tiny_bundle)
    choice = engine.choose_engine(bundle, "auto")
    assert (choice.backend, choice.device, choice.dtype, choice.build) == ("tensorrt", "cuda", torch.float16, True)
    said = []
    restorer = engine.load_engine(bundle, "auto", progress=said.append)
    assert restorer.backend.name in ("torch", "onnxruntime")
    assert "TensorRT engine build failed (builder: out of GPU memory while tuning); using another backend" in said
    assert said[-1].startswith(f"backend: {restorer.backend.name} on ")


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_a_gpu_device_without_a_gpu_is_refused(tiny_bundle):
    with pytest.raises(BackendError, match=r"--device cuda:1: no CUDA GPU is visible to torch"):
        select(load_bundle(tiny_bundle), "auto", "cuda:1")
