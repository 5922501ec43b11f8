"""`instantrestore batch` (plugin/commands/batch.py, batch_videos.py, batch_manifest.py, batch_ray.py) on the miniature
model: three short clips of a real face, one of them corrupt, restored in one process and on a local Ray runtime;
outputs equal what `video` makes, a rerun skips what is done, and a worker killed mid-video leaves no partial file
and its video is finished by another."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.batch_manifest import MANIFEST_NAME
from instantrestore.plugin.batch_videos import BatchError, collect_inputs
from instantrestore.plugin.commands import batch
from instantrestore.plugin.cli import main
from instantrestore.runtime.files import temp_files

from tests.support.media_helpers import astronaut, placed_face, read_frames, write_clip
from tests.support.recognition import change, face_boxes, two_people


@pytest.mark.timeout(300)
def test_batch_takes_several_profiles(two_person_home, tmp_path, monkeypatch, capsys):
    folder, _ = two_person_home
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(folder))
    (tmp_path / "talks").mkdir()
    clip = write_clip(tmp_path / "talks" / "two.mp4", [two_people() for _ in range(6)], fps=25)
    decoded = read_frames(clip)
    astronaut_box, hopper_box = face_boxes(decoded[0])
    code = main(["batch", str(tmp_path / "talks"), "-o", str(tmp_path / "out"), "--profile", "eileen",
                 "--profile", "grace", "--backend", "torch"])
    assert code == 0, capsys.readouterr().err
    restored = read_frames(tmp_path / "out" / "two.mp4")
    for index in range(2, len(decoded)):
        assert change(restored[index], decoded[index], astronaut_box) > 15
        assert change(restored[index], decoded[index], hopper_box) > 15


SIZE, FRAMES = (320, 240), 10


@pytest.fixture(scope="module")
def batch_home(tmp_path_factory, tiny_bundle):
    """A state folder with the miniature bundle as the default and the profile "me" enrolled."""
    folder = tmp_path_factory.mktemp("batch-home")
    selfie = folder / "me.jpg"
    Image.fromarray(astronaut()).save(selfie)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(folder))
        home.remember_bundle(tiny_bundle)
        assert main(["enroll", str(selfie), "--name", "me"]) == 0
    return folder


@pytest.fixture
def in_home(batch_home, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(batch_home))
    return batch_home


@pytest.fixture(scope="module")
def talks(tmp_path_factory):
    """talks/a.mp4 (the face drifting right), talks/2024/b.mp4 (drifting down, with audio), and
    talks/2024/broken.mp4, the first 3 KB of a, as an interrupted copy leaves it."""
    folder = tmp_path_factory.mktemp("archive") / "talks"
    (folder / "2024").mkdir(parents=True)
    write_clip(folder / "a.mp4", [placed_face(SIZE, 0.45, (40.0 + 3 * i, 10.0))[0] for i in range(FRAMES)], fps=24)
    write_clip(folder / "2024" / "b.mp4", [placed_face(SIZE, 0.42, (80.0, 5.0 + 2 * i))[0] for i in range(FRAMES)],
               fps=25, audio=True)
    (folder / "2024" / "broken.mp4").write_bytes((folder / "a.mp4").read_bytes()[:3000])
    (folder / "notes.txt").write_text("not a video")
    return folder


def files_under(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def assert_same_video(a: Path, b: Path):
    """Equal frame for frame, within the encoder's noise."""
    frames_a, frames_b = read_frames(a), read_frames(b)
    assert len(frames_a) == len(frames_b) == FRAMES
    diff = np.abs(np.stack(frames_a).astype(np.int16) - np.stack(frames_b).astype(np.int16))
    assert diff.mean() < 0.5 and diff.max() < 40


@pytest.fixture(scope="module")
def video_outputs(batch_home, talks, tmp_path_factory):
    """What `video` makes of each good clip."""
    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(batch_home))
        for name in ("a.mp4", "2024/b.mp4"):
            target = out / name.replace("/", "_")
            assert main(["video", str(talks / name), "-o", str(target), "--profile", "me", "--backend", "torch"]) == 0
    return {"a.mp4": out / "a.mp4", "2024/b.mp4": out / "2024_b.mp4"}


MANIFEST = MANIFEST_NAME


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_inputs_keep_their_relative_paths_in_a_stable_order(talks, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"# talks to restore\n{talks / 'a.mp4'}\n\n{talks / '2024'}\n")
    videos = collect_inputs([listed], tmp_path / "out")
    assert [v.name for v in videos] == ["a.mp4", "b.mp4", "broken.mp4"]
    videos = collect_inputs([talks], tmp_path / "out")
    assert [v.name for v in videos] == ["2024/b.mp4", "2024/broken.mp4", "a.mp4"]
    assert videos[0].output == (tmp_path / "out" / "2024" / "b.mp4").resolve()
    # an output folder inside the input folder is not read back as input
    assert [v.name for v in collect_inputs([talks], talks / "2024")] == ["a.mp4"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mp4").write_bytes(b"another a.mp4")
    with pytest.raises(BatchError, match="would both be written to"):
        collect_inputs([talks / "a.mp4", tmp_path / "other" / "a.mp4"], tmp_path / "out")
    with pytest.raises(BatchError, match="no such file or folder"):
        collect_inputs([tmp_path / "missing.mp4"], tmp_path / "out")


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_batch_in_one_process_restores_reports_and_resumes(in_home, talks, video_outputs, tmp_path, capsys):
    out = tmp_path / "restored"
    args = ["batch", str(talks), "-o", str(out), "--profile", "me", "--backend", "torch"]
    assert main(args) == 2  # the broken clip failed; the others are done
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].split() == ["video", "result", "frames", "faces", "restored", "seconds"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert rows["a.mp4"].split()[1:4] == ["done", str(FRAMES), str(FRAMES)]
    assert rows["2024/b.mp4"].split()[1:4] == ["done", str(FRAMES), str(FRAMES)]
    assert "failed: " in rows["2024/broken.mp4"] and "broken.mp4" in rows["2024/broken.mp4"]
    assert "2 restored" in captured.err and "1 failed" in captured.err and "Traceback" not in captured.err
    assert files_under(out) == {"a.mp4", "2024/b.mp4", MANIFEST}  # no partial file, nothing for the broken one
    for name, single in video_outputs.items():
        assert_same_video(out / name, single)

    stamps = {name: (out / name).stat().st_mtime_ns for name in ("a.mp4", "2024/b.mp4")}
    assert main(args) == 2
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["a.mp4"].split()[1] == "skipped" and rows["2024/b.mp4"].split()[1] == "skipped"
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps

    # an output that is not what we wrote, or other options, are redone; the rest is still skipped
    (out / "a.mp4").write_bytes(b"damaged")
    assert main(args + ["--blend", "1.0"]) == 2
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["a.mp4"].split()[1] == "done" and rows["2024/b.mp4"].split()[1] == "skipped"
    assert main(args + ["--blend", "0.5"]) == 2
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["a.mp4"].split()[1] == "done" and rows["2024/b.mp4"].split()[1] == "done"


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_an_interrupted_batch_leaves_no_partial_file_and_resumes(in_home, talks, tmp_path):
    out = tmp_path / "restored"
    command = [sys.executable, "-m", "instantrestore.plugin.cli", "batch", str(talks), "-o", str(out),
               "--profile", "me", "--backend", "torch"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(temp_files(folder, name) for folder in (out, out / "2024") if folder.is_dir()
                                for name in ("a.mp4", "b.mp4")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not [name for name in files_under(out) if Path(name).name.startswith(".") and name != MANIFEST]
    # the next run finishes the job
    assert main(["batch", str(talks), "-o", str(out), "--profile", "me", "--backend", "torch"]) == 2
    assert files_under(out) == {"a.mp4", "2024/b.mp4", MANIFEST}


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_batch_on_ray_survives_a_killed_worker(in_home, talks, video_outputs, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "restored"
    started, killed = [], []

    def kill_when_writing(pid, output: Path):
        """Kill the worker once its partial output exists: mid-video."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if output.parent.is_dir() and temp_files(output.parent, output.name):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    def events(kind, **info):
        if kind == "started":
            started.append((info["video"].name, info["pid"]))
            if info["video"].name == "a.mp4" and not killed:
                threading.Thread(target=kill_when_writing, args=(info["pid"], info["video"].output), daemon=True).start()

    options = batch.Options(inputs=[talks], out_dir=out, profile="me", backend="torch", ray="local", jobs=2)
    videos = {v.name: v for v in batch.run_batch(options, events=events)}
    assert killed, "the worker was never caught writing"
    assert [name for name, _ in started].count("a.mp4") == 2  # retried ...
    (first_pid,) = [pid for name, pid in started if name == "a.mp4"][:1]
    assert [pid for name, pid in started if name == "a.mp4"][1] != first_pid  # ... on another worker
    assert videos["a.mp4"].status == "done" and videos["2024/b.mp4"].status == "done"
    assert videos["2024/broken.mp4"].status == "failed"
    assert files_under(out) == {"a.mp4", "2024/b.mp4", MANIFEST}  # the killed worker's partial file is gone
    for name, single in video_outputs.items():
        assert_same_video(out / name, single)
    # a rerun, in one process or on Ray, finds everything done
    again = {v.name: v.status for v in batch.run_batch(options)}
    assert again == {"2024/b.mp4": "skipped", "2024/broken.mp4": "failed", "a.mp4": "skipped"}


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_no_ray_cluster_to_join_is_one_line(in_home, talks, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["batch", str(talks / "a.mp4"), "-o", str(tmp_path / "o"), "--profile", "me", "--ray", "auto"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("instantrestore: error: cannot reach the Ray cluster 'auto' (")
    assert "ray start --head" in last
    assert not list((tmp_path / "o").rglob("*.mp4"))


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_torch_thread")
def test_ray_missing_says_how_to_install_it(in_home, talks, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    assert main(["batch", str(talks), "-o", str(tmp_path / "o"), "--profile", "me", "--ray"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'instantrestore: error: --ray needs Ray, which is not installed: pip install -e ".[cluster]" (from a checkout)')
    assert not (tmp_path / "o").exists()
