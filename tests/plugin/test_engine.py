"""Which backend a command runs on, what it builds first, and how a CPU run shares the cores."""

import shutil

import cv2
import pytest
import torch

from instantrestore.plugin import engine, home
from instantrestore.runtime.backends import Choice, onnxruntime_backend, tensorrt_backend

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
