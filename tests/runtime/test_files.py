"""Atomic writes, temp-file clean-up after a killed run, and the remembered file hashes."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from instantrestore.runtime import files
from instantrestore.runtime.media import FileSink


OLD = time.time() - 3600  # an hour ago: well past files.STALE_TEMP_AGE_S


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def aged(path, when=OLD):
    os.utime(path, (when, when))
    return path


# ------------------------------------------------------------------------------------------ stale temp files


def test_what_a_killed_run_left_is_removed_by_the_next_write_into_the_folder(tmp_path):
    gone, alive = dead_pid(), os.getppid()
    stale = [  # kill -9 mid-write: ours, of a process that is gone, untouched for an hour
        tmp_path / f".talk.mp4.{gone}-abcd_123.partial.mp4",
        tmp_path / f".settings.json.{gone}-x1y2z3w4.tmp",
    ]
    kept = [
        tmp_path / f".talk.mp4.{alive}-abcdefgh.partial.mp4",  # its writer still runs
        tmp_path / f".other.mp4.{gone}-abcdefgh.partial.mp4",  # another output's
        tmp_path / ".talk.mp4.notes",  # not of our pattern
        tmp_path / "talk.partial.mp4",  # the user's own file
    ]
    fresh = tmp_path / f".talk.mp4.{gone}-qwertyui.partial.mp4"  # its writer may be in another container
    for path in [*stale, *kept, fresh]:
        path.write_bytes(b"half a file")
    for path in [*stale, *kept]:
        aged(path)

    with FileSink(tmp_path / "talk.mp4", fps=25, size=(64, 48)) as sink:
        sink.write(np.zeros((48, 64, 3), np.uint8))
    files.atomic_write_json(tmp_path / "settings.json", {"bundle": "x"})
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"talk.mp4", "settings.json", fresh.name, *(p.name for p in kept)}


def test_stale_temp_folders_are_removed_for_the_name_asked(tmp_path):
    """The export writes a bundle into a temp folder beside it; the same helper clears what a kill left."""
    gone = dead_pid()
    folder = tmp_path / f".bundle.{gone}-k3j4h5g6"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.safetensors").write_bytes(b"half")
    aged(folder)
    other = tmp_path / f".bundle-2.{gone}-k3j4h5g6"
    other.mkdir()
    aged(other)
    assert files.remove_stale_temps(tmp_path, "bundle") == [folder]
    assert not folder.exists() and other.exists()


def test_temp_names_carry_the_writers_pid_and_fit_the_name_limit(tmp_path):
    name = "a" + "é" * 127 + ".mp4"  # 259 bytes; a cut at an even byte count falls inside a character
    prefix = files.temp_prefix(tmp_path / name)
    assert prefix.endswith(f".{os.getpid()}-") and len(prefix.encode()) <= 180
    stem = prefix[1:-len(f".{os.getpid()}-")]
    assert len(stem) > 60 and name.startswith(stem)  # whole characters of the name


def test_atomic_writes_follow_symlinks_refuse_devices_and_take_255_byte_names(tmp_path):
    import stat

    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "settings.json"
    link.symlink_to(real)
    files.atomic_write_json(link, {"bundle": "b"})
    assert link.is_symlink() and json.loads(real.read_text()) == {"bundle": "b"}
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="pipe.json exists and is not a regular file"):
        files.atomic_write_json(fifo, {})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    long_name = "p" * 250 + ".json"
    files.atomic_write_json(tmp_path / long_name, {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_name, "pipe.json", "real.json", "settings.json"])


# ------------------------------------------------------------------------------------------ remembered hashes


def test_a_remembered_hash_is_used_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "HASH_RACY_NS", -1)  # remember even a file written this instant
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: calls.append(p) or real(p))
    first = files.sha256_remembered(path)
    assert files.sha256_remembered(path) == first and len(calls) == 1
    with open(path, "r+b") as f:  # four bytes changed in place: same size, same inode
        f.write(b"bbbb")
    stamp = os.stat(path).st_mtime_ns + 10_000_000  # a later write, even on a coarse file clock
    os.utime(path, ns=(stamp, stamp))
    assert files.sha256_remembered(path) == real(path) != first and len(calls) == 2
    files.hash_record_path(path).write_text("{not json")
    assert files.sha256_remembered(path) == real(path)  # a damaged record is only a cache miss


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a" / "engine.plan"
    files.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("build crashed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["engine.plan"]  # no temp file left
