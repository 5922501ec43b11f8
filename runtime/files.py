"""File helpers: atomic writes (temp file beside the target, then os.replace), our temp names and the removal
of those that killed writers left, the file a write replaces, and SHA-256 hashing remembered beside the file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from .errors import InstantRestoreError

# Temp names: ".<name>.<pid>-<8 random>[suffix]" beside the target. The name is cut to TEMP_STEM_BYTES so a
# target name at the file system's 255-byte limit still has a temp name; the pid says whose it is.
TEMP_STEM_BYTES = 160
# A temp file of a process that is gone is removed once it has not been written for this long: a writer in
# another container (another pid namespace) sharing the folder looks dead to us, but a live writer of ours
# is never idle that long.
STALE_TEMP_AGE_S = 10 * 60


def _temp_stem(name: str) -> str:
    return name.encode()[:TEMP_STEM_BYTES].decode(errors="ignore")  # never half a UTF-8 character


def temp_prefix(path) -> str:
    """The prefix of our temp names for `path` (for tempfile.mkstemp/mkdtemp with dir=path's folder)."""
    return f".{_temp_stem(Path(path).name)}.{os.getpid()}-"


def new_temp(target: Path, suffix: str = "", folder: bool = False) -> Path:
    """A new temp file (or folder) of ours beside `target`, for a write that a rename finishes; what killed
    writers left there for `target` is removed first."""
    target = Path(target)
    remove_stale_temps(target.parent, target.name)
    if folder:
        return Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=suffix, dir=target.parent))
    handle, name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=target.parent)
    os.close(handle)
    return Path(name)


def temp_files(folder, name: str) -> list[tuple[Path, int]]:
    """Our temp files and folders for the target `name` in `folder`, each with the pid that made it."""
    pattern = re.compile(rf"\.{re.escape(_temp_stem(name))}\.(\d+)-[a-z0-9_]{{8}}(\..*)?", re.DOTALL)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [(Path(entry.path), int(match.group(1))) for entry in entries if (match := pattern.fullmatch(entry.name))]


def remove_temp(path: Path) -> bool:
    """Remove one of our temp files or folders; never raises (cleanup is best effort)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        return False
    return True


def remove_stale_temps(folder, name: str) -> list:
    """Remove what an earlier process killed mid-write (kill -9, power loss) left of its temp files and
    folders for the target `name` in `folder`: only names of our pattern, of a pid no longer running here,
    not written for STALE_TEMP_AGE_S. Returns the paths removed; never raises (cleanup is best effort)."""
    removed = []
    for path, pid in temp_files(folder, name):
        if _pid_running(pid):
            continue
        try:
            if time.time() - path.lstat().st_mtime < STALE_TEMP_AGE_S:
                continue
        except OSError:
            continue
        if remove_temp(path):
            removed.append(path)
    return removed


def _pid_running(pid: int) -> bool:
    if pid == os.getpid() or sys.platform.startswith("win"):
        return True  # Windows: os.kill(pid, 0) would send Ctrl+C to it; keep the file rather than guess
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: keep its files
    return True


class NotAFileError(InstantRestoreError, FileExistsError):
    """An output path names something a file cannot replace (a folder, a device, a FIFO)."""


def output_target(path) -> Path:
    """The file a write to `path` replaces. A symlink is followed: its target gets the new file and the link
    stays. An existing path that is not a regular file (a device such as /dev/null, a FIFO, a socket, a
    folder) is refused: the rename would replace it with a file."""
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise NotAFileError(f"{path} exists and is {kind}; it cannot be replaced, choose a file name")
    return target


def commit_temp_file(tmp, path) -> None:
    """Give a finished temp file the ordinary mode (mkstemp makes 0600), flush it to disk and rename it
    over `path`: readers see the old file or the whole new one, never a part."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    _fsync_file(Path(tmp))
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it replaces `path` atomically (a symlink's
    target, see output_target)."""
    path = output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp(path, suffix + ".tmp")
    try:
        yield tmp
        commit_temp_file(tmp, path)  # after writing: some writers replace the file rather than fill it
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def atomic_write_json(path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _fsync_file(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass  # best effort: some filesystems do not support fsync


def sha256_file(path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in chunks (weights files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


HASH_RACY_NS = 2_000_000_000


def sha256_remembered(path) -> str:
    """sha256_file(path), remembered beside the file in `.NAME.sha256.json` under the file's size, inode,
    mtime and ctime: gigabytes of weights are hashed once, not on every load. Any write through the file
    system changes mtime/ctime (ctime cannot be set back), so a changed file is hashed again; the record is
    only a cache: unreadable, or a folder we cannot write, means hashing again."""
    path = Path(path)
    identity = _file_identity(path)
    digest = remembered_sha256(path, identity)
    if digest is not None:
        return digest
    digest = sha256_file(path)
    # Not remembered if written to while we read it, or so recently that a write in the same clock tick
    # (file times are coarse) could follow and leave the same identity ("racy git").
    if _file_identity(path) == identity and time.time_ns() - max(identity[2:]) > HASH_RACY_NS:
        try:
            atomic_write_json(hash_record_path(path), {"file": identity, "sha256": digest})
        except OSError:
            pass
    return digest


def remembered_sha256(path, identity=None) -> Optional[str]:
    """The SHA-256 sha256_remembered recorded for the file as it is now, or None (never hashed, or changed)."""
    identity = identity or _file_identity(Path(path))
    try:
        record = json.loads(hash_record_path(path).read_text())
        if record.get("file") == identity and isinstance(record.get("sha256"), str):
            return record["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    return None


def hash_record_path(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.sha256.json")


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
