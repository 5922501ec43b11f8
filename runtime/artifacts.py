"""On-disk cache of derived model artifacts (ONNX graphs, TensorRT plans, timing caches).

Layout under the state folder::

    <state>/engines/<bundle_id[:16]>/<kind>-<precision>-<profile>-<digest>.<ext>
    <state>/engines/<bundle_id[:16]>/<kind>-<precision>-<profile>-<digest>.<ext>.json   (sidecar)
    <state>/engines/timing/<digest>.cache

An artifact is identified by an `ArtifactKey`: the bundle's content hash, the precision, the shape
profile, and for TensorRT plans the TensorRT version, GPU name and compute capability. The file name
carries a digest of the whole key, so artifacts for another GPU or TensorRT version never collide
with ours; the JSON sidecar repeats the key and the file's size and SHA-256, and is written last, so
it doubles as the commit marker of a write. A file whose sidecar is missing, unreadable or does not
match the key is never loaded.

Only JSON and raw bytes are written here; every write is atomic (temp file in the same folder, then
os.replace).
"""

from __future__ import annotations

import contextlib
import dataclasses
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

# Bump when the meaning of an artifact changes (graph signature, plan inputs, ...): older files
# become stale and are rebuilt.
ARTIFACT_FORMAT = 1

APP_NAME = "instantrestore"
HOME_ENV = "INSTANTRESTORE_HOME"

# Limits the graphs are exported and engines are built for: one graph serves every profile.
MAX_REFERENCES = 8
GRAPHS = ("restorer", "enroller")  # the two networks a bundle exports, engines and graphs are named by
MAX_BATCH = 8

VALID, MISSING, STALE, FOREIGN, CORRUPT = "valid", "missing", "stale", "foreign", "corrupt"


class ArtifactError(RuntimeError):
    """A cached artifact is missing, stale, foreign or damaged."""


# ----------------------------------------------------------------------------------------------
# State folder


def state_dir() -> Path:
    """The folder for profiles, engines and settings.

    `INSTANTRESTORE_HOME` wins; otherwise the platform's per-user data folder.
    """
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    home = Path.home()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / APP_NAME


def engines_dir() -> Path:
    return state_dir() / "engines"


def bundle_cache_dir(bundle_id: str) -> Path:
    """Folder holding every artifact derived from one bundle."""
    _check_bundle_id(bundle_id)
    return engines_dir() / bundle_id[:16]


def timing_cache_dir() -> Path:
    return engines_dir() / "timing"


def _check_bundle_id(bundle_id: str) -> None:
    if not isinstance(bundle_id, str) or len(bundle_id) < 16 or any(
        c not in "0123456789abcdef" for c in bundle_id.lower()
    ):
        raise ArtifactError(f"bundle id must be a hex content hash of 16+ digits, got {bundle_id!r}")


# ----------------------------------------------------------------------------------------------
# Shape profile


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """Dynamic-axis ranges an engine is built for: (min, opt, max) of batch and reference count."""

    # Live video runs batch 1; file jobs may batch a few frames (larger batches are split by the backend).
    batch: tuple = (1, 1, 4)
    refs: tuple = (1, 4, MAX_REFERENCES)

    def __post_init__(self):
        for name in ("batch", "refs"):
            value = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 3 or not (1 <= value[0] <= value[1] <= value[2]):
                raise ValueError(f"profile {name} must be (min, opt, max) with 1 <= min <= opt <= max, got {value}")
        if self.refs[2] > MAX_REFERENCES:
            raise ValueError(f"profile refs max {self.refs[2]} exceeds the supported {MAX_REFERENCES}")
        if self.batch[2] > MAX_BATCH:
            raise ValueError(f"profile batch max {self.batch[2]} exceeds the supported {MAX_BATCH}")

    @property
    def tag(self) -> str:
        b, r = self.batch, self.refs
        return f"b{b[0]}-{b[1]}-{b[2]}_r{r[0]}-{r[1]}-{r[2]}"

    def covers(self, batch: int, refs: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.refs[0] <= refs <= self.refs[2]

    def to_dict(self) -> dict:
        return {"batch": list(self.batch), "refs": list(self.refs)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(batch=tuple(d["batch"]), refs=tuple(d["refs"]))

    def input_shapes(self, bundle, graph: str = "restorer") -> dict:
        """Per input name, the (min, opt, max) shapes of this profile for one of a bundle's graphs.

        Restorer inputs: images (B,3,S,S), noise (B,L,s,s), k{i}/v{i} (N,T_i,C_i).
        Enroller inputs: refs (N,3,S,S), noise (N,L,s,s) with L latent channels; its batch axis is the reference count.
        """
        S, s, latent = bundle.crop_size, bundle.latent_size, bundle.latent_channels
        layer_shapes = bundle.layer_shapes
        shapes = {}
        if graph == "restorer":
            for j, key in enumerate(("min", "opt", "max")):
                b, n = self.batch[j], self.refs[j]
                shapes.setdefault("images", {})[key] = (b, 3, S, S)
                shapes.setdefault("noise", {})[key] = (b, latent, s, s)
                for i, (t, c) in enumerate(layer_shapes):
                    shapes.setdefault(f"k{i}", {})[key] = (n, int(t), int(c))
                    shapes.setdefault(f"v{i}", {})[key] = (n, int(t), int(c))
        elif graph == "enroller":
            for j, key in enumerate(("min", "opt", "max")):
                n = self.refs[j]
                shapes.setdefault("refs", {})[key] = (n, 3, S, S)
                shapes.setdefault("noise", {})[key] = (n, latent, s, s)
        else:
            raise ValueError(f"unknown graph {graph!r} (expected 'restorer' or 'enroller')")
        return {name: (v["min"], v["opt"], v["max"]) for name, v in shapes.items()}


DEFAULT_PROFILE = ShapeProfile()


def precision_name(dtype) -> str:
    """'fp32' / 'fp16' from a torch dtype, numpy-ish name or precision string."""
    text = str(dtype).replace("torch.", "").lower()
    table = {"float32": "fp32", "fp32": "fp32", "float": "fp32", "float16": "fp16", "fp16": "fp16", "half": "fp16"}
    if text not in table:
        raise ValueError(f"unsupported precision {dtype!r} (expected float32 or float16)")
    return table[text]


def precision_dtype(dtype):
    """The torch dtype of a precision (anything precision_name takes)."""
    import torch

    return torch.float16 if precision_name(dtype) == "fp16" else torch.float32


# ----------------------------------------------------------------------------------------------
# Keys


@dataclasses.dataclass(frozen=True)
class ArtifactKey:
    """Everything an artifact's validity depends on."""

    kind: str  # "onnx-restorer", "onnx-enroller", "trt-restorer", "trt-enroller"
    bundle_id: str
    precision: str
    profile: Optional[ShapeProfile] = None  # None for ONNX graphs (dynamic axes, no profile)
    trt_version: Optional[str] = None
    gpu_name: Optional[str] = None
    compute_capability: Optional[str] = None
    opset: Optional[int] = None
    format: int = ARTIFACT_FORMAT

    def __post_init__(self):
        _check_bundle_id(self.bundle_id)
        object.__setattr__(self, "precision", precision_name(self.precision))
        if self.kind.startswith("trt-") and not (self.trt_version and self.gpu_name and self.compute_capability):
            raise ValueError("a TensorRT artifact key needs trt_version, gpu_name and compute_capability")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "bundle_id": self.bundle_id,
            "precision": self.precision,
            "profile": self.profile.to_dict() if self.profile else None,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "opset": self.opset,
            "format": self.format,
        }

    @property
    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def slot(self) -> str:
        """File-name prefix shared by every variant of this artifact (any GPU / TRT version)."""
        tag = self.profile.tag if self.profile else "dyn"
        return f"{self.kind}-{self.precision}-{tag}"

    def filename(self, ext: str) -> str:
        return f"{self.slot}-{self.digest[:16]}.{ext}"

    def path(self, ext: str, folder=None) -> Path:
        """Where this artifact lives: `folder` if given, else the bundle's cache folder."""
        base = Path(folder) if folder is not None else bundle_cache_dir(self.bundle_id)
        return base / self.filename(ext)


def trt_key(kind: str, bundle_id: str, precision, profile: ShapeProfile, trt_version: str,
            gpu_name: str, compute_capability) -> ArtifactKey:
    cc = compute_capability
    if isinstance(cc, (tuple, list)):
        cc = f"{cc[0]}.{cc[1]}"
    return ArtifactKey(kind=kind, bundle_id=bundle_id, precision=precision, profile=profile,
                       trt_version=str(trt_version), gpu_name=str(gpu_name), compute_capability=str(cc))


def onnx_key(graph: str, bundle_id: str, precision) -> ArtifactKey:
    # The opset is recorded in the sidecar, not the key: a reader accepts whichever opset was used.
    return ArtifactKey(kind=f"onnx-{graph}", bundle_id=bundle_id, precision=precision)


def cuda_identity(device=None) -> tuple:
    """(GPU name, 'major.minor') of a CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise ArtifactError("no CUDA GPU is visible to torch")
    index = torch.device(device if device is not None else "cuda").index
    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


# ----------------------------------------------------------------------------------------------
# Atomic writes


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
        raise FileExistsError(f"{path} exists and is {kind}; it cannot be replaced, choose a file name")
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


# ----------------------------------------------------------------------------------------------
# Sidecars, lookup, invalidation


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path, key: ArtifactKey, extra_files=(), **info) -> Path:
    """Record `key` and the size/hash of `path` (and of any external-data files); commits the artifact."""
    path = Path(path)
    files = {}
    for p in (path, *[Path(e) for e in extra_files]):
        files[p.name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    meta = {"key": key.to_dict(), "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    return atomic_write_json(sidecar_path(path), meta)


def read_sidecar(path) -> Optional[dict]:
    try:
        with open(sidecar_path(path), "r", encoding="utf-8") as f:
            meta = json.load(f)
        return meta if isinstance(meta, dict) and isinstance(meta.get("key"), dict) else None
    except (OSError, ValueError):
        return None


def classify(path, key: ArtifactKey, verify_hash: bool = True) -> tuple:
    """(status, reason) of the artifact at `path` with respect to `key`.

    foreign: made for another bundle, GPU or precision; stale: same bundle and GPU but another
    TensorRT version, opset, profile or artifact format; corrupt: missing sidecar or files that do
    not match it (size, and with verify_hash the SHA-256, remembered per file: see sha256_remembered).
    """
    path = Path(path)
    if not path.exists():
        return MISSING, f"{path} does not exist"
    meta = read_sidecar(path)
    if meta is None:
        return CORRUPT, f"{path.name} has no readable sidecar (interrupted write?)"
    want, got = key.to_dict(), meta["key"]
    for field in ("kind", "bundle_id", "gpu_name", "compute_capability", "precision"):
        if got.get(field) != want[field]:
            return FOREIGN, f"{path.name} was made for {field}={got.get(field)!r}, need {want[field]!r}"
    for field in ("trt_version", "opset", "profile", "format"):
        if got.get(field) != want[field]:
            return STALE, f"{path.name} has {field}={got.get(field)!r}, need {want[field]!r}"
    files = meta.get("files") or {}
    if path.name not in files:
        return CORRUPT, f"{path.name} is not listed in its sidecar"
    for name, rec in files.items():
        p = path.with_name(name)
        if not p.exists():
            return CORRUPT, f"{name} is missing"
        if p.stat().st_size != rec.get("size"):
            return CORRUPT, f"{name} has {p.stat().st_size} bytes, sidecar says {rec.get('size')}"
        if verify_hash and sha256_remembered(p) != rec.get("sha256"):
            return CORRUPT, f"{name} does not match its recorded SHA-256"
    return VALID, "ok"


def find_artifact(key: ArtifactKey, ext: str, verify_hash: bool = True, folder=None) -> Optional[Path]:
    """The valid artifact for `key` (in `folder` or the cache), or None."""
    path = key.path(ext, folder)
    status, _ = classify(path, key, verify_hash=verify_hash)
    return path if status == VALID else None


def inspect_slot(key: ArtifactKey, ext: str, folder=None) -> list:
    """[(path, status, reason)] of every file in `key`'s slot (same kind/precision/profile)."""
    folder = Path(folder) if folder is not None else bundle_cache_dir(key.bundle_id)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob(f"{key.slot}-*.{ext}")):
        status, reason = classify(p, key)
        out.append((p, status, reason))
    return out


def remove_artifact(path) -> None:
    """Delete an artifact, its sidecar and its external-data files (sidecar first: uncommits it)."""
    path = Path(path)
    meta = read_sidecar(path)
    side = sidecar_path(path)
    if side.exists():
        side.unlink()
    names = set((meta or {}).get("files", {}).keys()) | {path.name}
    for name in names:
        for p in (path.with_name(name), hash_record_path(path.with_name(name))):
            if p.exists():
                p.unlink()


def prune_slot(key: ArtifactKey, ext: str, folder=None) -> list:
    """Remove stale and corrupt files in `key`'s slot; returns [(path, reason)] removed.

    Foreign files (another GPU in the same machine, say) are left alone: they are never loaded
    for this key, and are valid for theirs.
    """
    removed = []
    for p, status, reason in inspect_slot(key, ext, folder):
        if status in (STALE, CORRUPT):
            remove_artifact(p)
            removed.append((p, reason))
    return removed


def find_onnx_graphs(bundle_id: str, precision, folder=None, graphs=GRAPHS) -> Optional[dict]:
    """{graph: path} when every graph of the bundle is exported (valid) in `folder`/the cache, else None."""
    out = {}
    for graph in graphs:
        path = find_artifact(onnx_key(graph, bundle_id, precision), "onnx", folder=folder)
        if path is None:
            return None
        out[graph] = path
    return out
