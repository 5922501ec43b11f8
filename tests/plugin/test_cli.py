"""The command line as a whole: help and version, error lines and exit codes, and `export`."""

import json
import sys
from pathlib import Path

import pytest
import torch

from instantrestore.plugin import home
from instantrestore.plugin.commands import camera as camera_command
from instantrestore.plugin.commands import enroll, video
from instantrestore.plugin.cli import main
from instantrestore.plugin.errors import PluginError
from instantrestore.runtime import load_restorer

from tests.support.commands import CLIP_FRAMES, assert_clear_error, listing, run
from tests.support.media_helpers import read_frames, write_frameless_clip
from tests.support.tensorrt_fakes import MAJORS, FakeTRT, write_graph_standins


def test_help_names_the_default_hub_ids(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for hub_id in ("hwdz15508/InstantRestore/final_model_ckpt.pt", "stabilityai/sd-turbo", "stabilityai/sd-vae-ft-mse"):
        assert hub_id in text


# ------------------------------------------------------------------------------------ what --out may be


def test_out_the_file_system_refuses_is_the_users_to_fix(tiny_release, tmp_path, capsys):
    """A bundle folder under a file (or on a full or read-only disk) cannot be written: one line naming it, exit 2,
    not an internal error."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = notes / "bundle"
    args = ["export", "--checkpoint", str(tiny_release["checkpoint"]), "--base", str(tiny_release["base"]),
            "--vae", str(tiny_release["vae"]), "--out", str(out), "--dtype", "float32"]
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"instantrestore: error: cannot write the bundle to {out}: "), line  # then the OS's words
    assert notes.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_out_that_is_a_diffusers_folder_is_refused_and_kept(tiny_release, tmp_path, capsys):
    """A model folder with a config.json (the VAE folder, say) is not a bundle: nothing in it is touched."""
    vae = tmp_path / "sd-vae-ft-mse"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    args = ["export", "--checkpoint", str(tiny_release["checkpoint"]), "--base", str(tiny_release["base"]),
            "--vae", str(tiny_release["vae"]), "--out", str(vae)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"instantrestore: error: {vae} exists and is not a model bundle (export replaces only a bundle it wrote); "
        "choose another --out")
    assert sorted(p.name for p in vae.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert (vae / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == ["sd-vae-ft-mse"]  # no temp folder left beside it
    some_file = tmp_path / "notes.txt"
    some_file.write_text("mine")
    assert main(args[:-1] + [str(some_file)]) == 2 and some_file.read_text() == "mine"


def test_export_command(tiny_release, tmp_path, capsys):
    args = ["export", "--checkpoint", str(tiny_release["checkpoint"]), "--base", str(tiny_release["base"]),
            "--vae", str(tiny_release["vae"]), "--out", str(tmp_path / "bundle")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "merging LoRA" in err and "written to" in err
    assert (tmp_path / "bundle" / "config.json").is_file()
    bad = args[:1] + ["--checkpoint", str(tmp_path / "missing.pt")] + args[3:]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"instantrestore: error: checkpoint {tmp_path / 'missing.pt'} does not exist"


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_what_can_fail_is_reported_before_the_model_loads(in_state, tiny_release, selfies, recording_backend,
                                                            tmp_path, monkeypatch, capsys):
    loads = []
    for command in (enroll, video, camera_command):
        monkeypatch.setattr(command, "load_engine", lambda *args, **kwargs: loads.append(args))
    frameless = write_frameless_clip(tmp_path / "frameless.mkv")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "video", frameless, "-o", out_dir / "x.mp4", "--profile", "me")
    assert_clear_error(code, err, "frameless.mkv: the video has no frames")
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", frameless, "--vcam-backend", "recording")
    assert_clear_error(code, err, "frameless.mkv: the video has no frames")
    assert listing(out_dir) == set() and not recording_backend.instances

    # a state folder that cannot be created: said before the photos are searched and the model loads
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "a-file" / "state"))
    code, _, err = run(capsys, "enroll", selfies[0], "--name", "me", "--bundle", tiny_release["bundle"])
    assert_clear_error(code, err, "cannot be created", "a-file is a file")
    assert "face of" not in err and not loads

    # a corrupt settings file: said before the checkpoint is imported
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.json").write_text('{"bundle": ')
    code, _, err = run(capsys, "export", "--checkpoint", tiny_release["checkpoint"], "--base", tiny_release["base"],
                       "--vae", tiny_release["vae"], "--out", tmp_path / "bundle", "--dtype", "float32")
    assert_clear_error(code, err, "settings.json is unreadable")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_version_and_a_description_and_examples_on_every_help_screen(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"instantrestore {importlib.metadata.version('instantrestore')}"
    from instantrestore.plugin.cli import build_parser

    (commands,) = [action for action in build_parser()._actions if action.dest == "command_name"]
    assert {"export", "bundles", "enroll", "profiles", "camera", "video", "batch", "doctor", "bench"} <= set(commands.choices)
    for command in commands.choices:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        usage, description = out.split("\n\n")[:2]
        assert usage.startswith(f"usage: instantrestore {command}")
        assert not description.startswith(("positional arguments", "options")) and len(description) > 40, command
        assert f"examples:\n  instantrestore {command}" in out, command


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_export_records_the_default_bundle(fresh_home, tiny_release, tmp_path, capsys):
    out_dir = tmp_path / "bundle"
    code, out, err = run(capsys, "export", "--checkpoint", tiny_release["checkpoint"], "--base", tiny_release["base"],
                         "--vae", tiny_release["vae"], "--out", out_dir, "--dtype", "float32")
    assert code == 0, err
    assert out.strip() == str(out_dir)
    assert home.last_bundle_dir() == out_dir.resolve()


def video_fails_with(monkeypatch, error: BaseException) -> None:
    """`instantrestore video` whose job raises `error`, to see how the command line reports it."""
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(video, "run", fail)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_unexpected_errors_are_one_line_too(in_state, monkeypatch, capsys):
    video_fails_with(monkeypatch, RuntimeError("something\nbroke"))
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "instantrestore: internal error (RuntimeError): something broke (set INSTANTRESTORE_DEBUG=1 to see where; "
        "please report it)"]


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("bug", [ValueError("bad index 7"), OSError("Bad file descriptor")])
def test_a_bare_value_or_os_error_is_a_bug_not_the_users_mistake(in_state, monkeypatch, capsys, bug):
    """Only InstantRestoreError (and its subclasses) is the user's to fix: exit 2 and its own words. Anything
    else, a builtin ValueError or OSError included, is our bug: exit 1, said to be one."""
    video_fails_with(monkeypatch, bug)
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (f"instantrestore: internal error ({type(bug).__name__}): {bug} (set INSTANTRESTORE_DEBUG=1 "
                           "to see where; please report it)")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_every_user_error_shares_one_root_and_exits_2(in_state, monkeypatch, capsys):
    from instantrestore.runtime.errors import InstantRestoreError
    from instantrestore.runtime.media import MediaError

    video_fails_with(monkeypatch, MediaError("talk.mp4: the video has no frames"))
    code, _, err = run(capsys, "video", "a.mp4", "-o", "b.mp4", "--profile", "me")
    assert code == 2 and err.strip() == "instantrestore: error: talk.mp4: the video has no frames"
    assert issubclass(PluginError, InstantRestoreError) and issubclass(MediaError, InstantRestoreError)


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_debug_shows_the_traceback_of_a_bug(in_state, monkeypatch):
    video_fails_with(monkeypatch, RuntimeError("something broke"))
    monkeypatch.setenv("INSTANTRESTORE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["video", "a.mp4", "-o", "b.mp4", "--profile", "me"])


def graph_files() -> dict:
    """The state folder's exported graphs and sidecars, with their modification times."""
    return {p: p.stat().st_mtime_ns for p in home.engines_dir().rglob("onnx-*")}


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("one_torch_thread")
def test_export_onnx_from_the_command_line_then_video_runs_on_those_graphs(fresh_home, tiny_release, selfies, clip,
                                                                           tmp_path, capsys):
    """The export stage as a user runs it, nothing doubled: `export --checkpoint ... --onnx` writes graphs into the
    state folder's engine cache that onnxruntime runs like the torch path, and `video --backend onnxruntime` then
    runs on them without exporting again."""
    code, out, err = run(capsys, "export", "--checkpoint", tiny_release["checkpoint"], "--base", tiny_release["base"],
                         "--vae", tiny_release["vae"], "--onnx", "--dtype", "float32")
    assert code == 0, err
    bundle = home.resolve_bundle()
    assert out.strip() == str(bundle.path)
    said = dict(line.split("] onnx ", 1)[1].split(": ", 1) for line in err.splitlines() if "] onnx " in line)
    graphs = {graph: Path(path) for graph, path in said.items()}
    assert set(graphs) == {"restorer", "enroller"}
    for path in graphs.values():
        assert path.is_file() and path.parent.parent == home.engines_dir()
    written = graph_files()

    # the graphs compute what the torch path computes
    engines = dict(engines=home.engines_dir(), device="cpu", dtype=torch.float32)
    on_ort = load_restorer(bundle.path, backend="onnxruntime", **engines)
    on_torch = load_restorer(bundle.path, backend="torch", device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    S = bundle.crop_size
    profile = on_torch.enroll(torch.rand(2, 3, S, S, generator=g) * 2 - 1)
    x = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    assert (on_ort.restore(x, profile) - on_torch.restore(x, profile)).abs().max().item() < 2e-4

    # the short form on the default bundle finds them up to date
    code, out, err = run(capsys, "export", "--onnx", "--dtype", "float32")
    assert code == 0 and "up to date" in err and f"onnx restorer: {graphs['restorer']}" in err, err

    assert run(capsys, "enroll", *selfies, "--name", "me")[0] == 0
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "onnxruntime")
    assert code == 0, err
    assert "backend: onnxruntime on cpu (fp32)" in err and "exporting" not in err, err
    assert graph_files() == written  # nothing exported again
    assert len(read_frames(tmp_path / "out.mp4")) == CLIP_FRAMES


@pytest.mark.parametrize("major", MAJORS, ids=lambda major: f"trt{major}")
def test_export_tensorrt_from_the_command_line_builds_what_the_commands_then_load(fresh_home, tiny_bundle, major,
                                                                                  monkeypatch, capsys):
    """`export --tensorrt` through the command and the real build code, on a stand-in tensorrt that follows the
    recorded surface of each major (no TensorRT, no GPU here): plans land in the state folder's engine cache,
    where `--backend tensorrt` then finds them ready instead of building again."""
    from instantrestore.export import tensorrt_build
    from instantrestore.runtime import engine_cache
    from instantrestore.runtime.backends import select
    from instantrestore.runtime.backends import tensorrt_backend as bt

    fake = FakeTRT(major)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    for module in (bt, tensorrt_build):
        monkeypatch.setattr(module, "require_cuda", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(engine_cache, "cuda_identity", lambda device=None: ("NVIDIA H100 80GB HBM3", "9.0"))
    home.remember_bundle(tiny_bundle)
    bundle = home.resolve_bundle()
    write_graph_standins(home.engines_dir(), bundle)
    assert select(bundle, "tensorrt", engines=home.engines_dir()).build  # nothing built yet

    code, out, err = run(capsys, "export", "--tensorrt")
    assert code == 0, err
    assert out.strip() == str(bundle.path)
    plans = {line.split("] tensorrt ", 1)[1].split(": ")[0]: Path(line.split(": ", 1)[1])
             for line in err.splitlines() if "] tensorrt restorer: " in line or "] tensorrt enroller: " in line}
    assert set(plans) == {"restorer", "enroller"} and all(p.parent.parent == home.engines_dir() for p in plans.values())
    assert f"tensorrt: {fake.__version__} on NVIDIA H100 80GB HBM3 (sm 9.0), fp16" in err
    assert not select(bundle, "tensorrt", engines=home.engines_dir()).build  # the commands load these
    builds = [c for c in fake.calls if c[0] == "build"]
    assert len(builds) == 2
    code, _, err = run(capsys, "export", "--tensorrt")
    assert code == 0 and "engine is cached" in err and len([c for c in fake.calls if c[0] == "build"]) == 2
