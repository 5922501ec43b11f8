"""Which backend a command runs on, what it builds first, how a CPU run shares the cores, and a fourth backend
that joins them all by registration alone."""

import shutil
from pathlib import Path

import cv2
import pytest
import torch

from instantrestore.export import Maker, make_for, register_maker
from instantrestore.export.build import MAKERS
from instantrestore.plugin import engine, home
from instantrestore.plugin.commands import doctor
from instantrestore.runtime import files, load_restorer
from instantrestore.runtime.backends import (
    BACKENDS,
    CHOICES,
    Backend,
    Choice,
    onnxruntime_backend,
    register,
    select,
    tensorrt_backend,
)
from instantrestore.runtime.backends.torch_backend import TorchBackend

from tests.support.commands import CLIP_FPS, CLIP_SIZE, assert_clear_error, listing, run
from tests.support.media_helpers import placed_face, write_clip


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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_tensorrt_asked_for_where_it_cannot_run_is_said_first(in_state, clip, recording_backend, tmp_path, capsys):
    from instantrestore.runtime.backends.tensorrt_backend import TensorRTUnavailableError, import_tensorrt, require_cuda

    try:
        import_tensorrt(), require_cuda()
        pytest.skip("TensorRT and a GPU are here")
    except TensorRTUnavailableError as error:
        reason = str(error)[:40]
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", clip, "--vcam-backend", "recording",
                       "--backend", "tensorrt")
    assert_clear_error(code, err, reason)
    assert "building" not in err and not recording_backend.instances  # no build announced, no camera opened
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "tensorrt")
    assert_clear_error(code, err, reason)
    assert "building" not in err and listing(tmp_path) == set()


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("one_torch_thread")
def test_onnx_backend_exports_missing_graphs_first(in_state, clip, tmp_path, capsys):
    """`video --backend onnxruntime` with no graphs yet exports them once, for real, into the state folder's
    engine cache (`export --onnx` itself: tests/plugin/test_cli.py)."""
    engines = home.engines_dir()
    assert not list(engines.rglob("onnx-*.onnx"))
    try:
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend",
                           "onnxruntime", "--device", "cpu")
        assert code == 0, err
        assert "no fp32 ONNX graphs for this bundle yet; exporting them once" in err
        assert err.index("exporting them once") < err.index("backend: onnxruntime on cpu (fp32)")
        bundle = home.resolve_bundle()
        assert onnxruntime_backend.onnx_ready(bundle, torch.float32, engines) == (True, "")
        assert listing(tmp_path) == {"out.mp4"}
    finally:
        shutil.rmtree(engines, ignore_errors=True)  # the module's other tests start without graphs


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_cpu_runs_give_the_model_all_cores_but_one_and_opencv_one(in_state, tmp_path, monkeypatch, capsys):
    from instantrestore.runtime.frames.pipeline import FramePipeline

    seen = []
    restore_located = FramePipeline.restore_located

    def noting_threads(self, located):  # in the pipeline's restore stage, where the model runs
        seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return restore_located(self, located)

    monkeypatch.setattr(FramePipeline, "restore_located", noting_threads)
    monkeypatch.setattr(engine, "usable_cores", lambda: 3, raising=False)
    opencv_threads = cv2.getNumThreads()
    clip = write_clip(tmp_path / "one.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]], fps=CLIP_FPS)
    try:
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "torch",
                           "--device", "cpu")
        assert code == 0, err
        assert seen == [(2, 1)]
        # onnxruntime's sessions get the same share; a GPU run leaves the CPU settings alone
        assert engine.use_cpu_threads(Choice("onnxruntime", "cpu", torch.float32)) == {"threads": 2}
        assert engine.use_cpu_threads(Choice("torch", "cuda", torch.float16)) == {}
    finally:
        torch.set_num_threads(1)
        cv2.setNumThreads(opencv_threads)


# ------------------------------------------------------------- a fourth backend, by registration alone


class ToyBackend(Backend):
    """A backend the project learns of only through `register`: torch's network on the CPU, which loads once
    export has written what it `builds`, a note naming the bundle, into the engine cache."""

    name = "toy"
    rank = 25  # after onnxruntime, before torch
    devices = ("cpu",)
    builds = "toy notes"
    ready_reason = "toy note found"

    @staticmethod
    def note_path(bundle, engines) -> Path:
        return Path(engines) / f"toy-{bundle.bundle_id[:12]}.txt"

    @classmethod
    def built(cls, bundle, device, dtype, engines) -> tuple:
        found = engines is not None and cls.note_path(bundle, engines).is_file()
        return found, "" if found else "no toy note"

    @classmethod
    def load(cls, bundle, device, dtype, engines=None, **options):
        return cls(bundle, engines, device, dtype)

    @classmethod
    def diagnose(cls) -> list:
        return [(True, f"torch {torch.__version__} on the CPU", "")]

    def __init__(self, bundle, engines, device, dtype):
        if self.note_path(bundle, engines).read_text() != bundle.bundle_id:
            raise ValueError("the toy note names another bundle")
        self.network = TorchBackend(bundle, device=device, dtype=dtype)
        self.device, self.dtype = self.network.device, self.network.dtype

    def enroll(self, refs, noise):
        return self.network.enroll(refs, noise)

    def restore(self, images, noise, layer_inputs):
        return self.network.restore(images, noise, layer_inputs)


def write_toy_note(bundle, choice, engines, progress=None) -> dict:
    return {"note": files.atomic_write_bytes(ToyBackend.note_path(bundle, engines), bundle.bundle_id.encode())}


@pytest.fixture
def toy_backend():
    register(ToyBackend)
    register_maker("toy notes", Maker(write_toy_note, "no toy note yet ({precision}); writing it", "toy note"))
    yield ToyBackend
    BACKENDS.pop("toy")
    MAKERS.pop("toy notes")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_a_backend_joins_by_registration_alone(toy_backend, in_state, tiny_bundle, tmp_path, capsys):
    bundle = home.resolve_bundle(tiny_bundle)
    engines = home.engines_dir()
    assert CHOICES == ("auto", "tensorrt", "onnxruntime", "toy", "torch")
    assert [c.topic for c in doctor.check_backends()] == ["tensorrt", "onnxruntime", "toy"]  # torch: nothing to say
    # ranked after onnxruntime, before torch: without its note "auto" on the CPU passes it over, and says why
    choice = select(bundle, "auto", "cpu", engines=engines)
    assert (choice.backend, choice.reasons[1:]) == ("torch", ["no toy note"])
    asked = engine.choose_engine(bundle, "toy", "cpu")
    assert (asked.backend, asked.device, asked.dtype, asked.build) == ("toy", "cpu", torch.float32, True)
    # the command line takes it, export makes its note first, and it restores a video
    clip = write_clip(tmp_path / "one.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]], fps=CLIP_FPS)
    try:
        code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "toy",
                           "--device", "cpu")
        assert code == 0, err
        assert err.index("no toy note yet (fp32); writing it") < err.index("backend: toy on cpu (fp32)")
        assert listing(tmp_path) == {"one.mp4", "out.mp4"}
        assert make_for(bundle, asked, engines) == {"note": ToyBackend.note_path(bundle, engines)}
        assert make_for(bundle, engine.choose_engine(bundle, "torch", "cpu"), engines) == {}  # builds nothing
        # with its note made, "auto" takes it over torch by rank, and load_restorer runs it
        choice = select(bundle, "auto", "cpu", engines=engines)
        assert (choice.backend, choice.device, choice.build) == ("toy", "cpu", False)
        toy = load_restorer(bundle.path, backend="toy", device="cpu", dtype=torch.float32, engines=engines)
        plain = load_restorer(bundle.path, backend="torch", device="cpu", dtype=torch.float32)
        assert isinstance(toy.backend, ToyBackend)
        g = torch.Generator().manual_seed(3)
        refs, images = (torch.rand(n, 3, bundle.crop_size, bundle.crop_size, generator=g) * 2 - 1 for n in (2, 1))
        assert (toy.restore(images, toy.enroll(refs)) - plain.restore(images, plain.enroll(refs))).abs().max() < 1e-5
    finally:
        ToyBackend.note_path(bundle, engines).unlink(missing_ok=True)
