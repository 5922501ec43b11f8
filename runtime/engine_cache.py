"""On-disk cache of derived model artifacts (ONNX graphs, TensorRT plans, timing caches), in an engines
folder that the caller gives (the plugin's is `<state>/engines`)::

    <engines>/<bundle_id[:16]>/<kind>-<precision>-<profile>-<digest>.<ext>
    <engines>/<bundle_id[:16]>/<kind>-<precision>-<profile>-<digest>.<ext>.json   (sidecar)
    <engines>/timing/<digest>.cache

An artifact is identified by an `ArtifactKey`: the bundle's content hash, the precision, the shape
profile, and for TensorRT plans the TensorRT version, GPU name and compute capability. The file name
carries a digest of the whole key, so artifacts for another GPU or TensorRT version never collide
with ours; the JSON sidecar repeats the key and the file's size and SHA-256, and is written last, so
it doubles as the commit marker of a write. A file whose sidecar is missing, unreadable or does not
match the key is never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Optional

from . import files
from .errors import InstantRestoreError
from .graphs import GRAPHS, ShapeProfile, precision_name

# Bump when the meaning of an artifact changes (graph signature, plan inputs, ...): older files
# become stale and are rebuilt.
ARTIFACT_FORMAT = 1

VALID, MISSING, STALE, FOREIGN, CORRUPT = "valid", "missing", "stale", "foreign", "corrupt"


class ArtifactError(InstantRestoreError, RuntimeError):
    """A cached artifact is missing, stale, foreign or damaged."""


def bundle_cache_dir(engines, bundle_id: str) -> Path:
    """The folder in `engines` holding every artifact derived from one bundle."""
    _check_bundle_id(bundle_id)
    return Path(engines) / bundle_id[:16]


def graph_folder(engines, bundle_id: str, folder=None) -> Path:
    """Where a bundle's ONNX graphs are: `folder` (an export's own) if given, else its folder in `engines`."""
    if folder is not None:
        return Path(folder)
    if engines is None:
        raise ArtifactError("no engine cache folder (engines) given, nor a folder of ONNX graphs")
    return bundle_cache_dir(engines, bundle_id)


def timing_cache_dir(engines) -> Path:
    return Path(engines) / "timing"


def _check_bundle_id(bundle_id: str) -> None:
    if not isinstance(bundle_id, str) or len(bundle_id) < 16 or any(
        c not in "0123456789abcdef" for c in bundle_id.lower()
    ):
        raise ArtifactError(f"bundle id must be a hex content hash of 16+ digits, got {bundle_id!r}")


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

    def path(self, ext: str, folder) -> Path:
        """Where this artifact lives in `folder` (the bundle's cache folder, or an export's own)."""
        return Path(folder) / self.filename(ext)


@dataclasses.dataclass(frozen=True)
class BuildTarget:
    """What a TensorRT plan is built for: the TensorRT version and the GPU (its name and compute capability,
    "major.minor" or (major, minor))."""

    trt_version: str
    gpu_name: str
    compute_capability: object


def trt_key(kind: str, bundle_id: str, precision, profile: ShapeProfile, target: BuildTarget) -> ArtifactKey:
    cc = target.compute_capability
    if isinstance(cc, (tuple, list)):
        cc = f"{cc[0]}.{cc[1]}"
    return ArtifactKey(kind=kind, bundle_id=bundle_id, precision=precision, profile=profile,
                       trt_version=str(target.trt_version), gpu_name=str(target.gpu_name), compute_capability=str(cc))


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
# Sidecars, lookup, invalidation


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path, key: ArtifactKey, extra_files=(), **info) -> Path:
    """Record `key` and the size/hash of `path` (and of any external-data files); commits the artifact."""
    path = Path(path)
    recorded = {}
    for p in (path, *[Path(e) for e in extra_files]):
        recorded[p.name] = {"size": p.stat().st_size, "sha256": files.sha256_file(p)}
    meta = {"key": key.to_dict(), "files": recorded, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    return files.atomic_write_json(sidecar_path(path), meta)


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
    recorded = meta.get("files") or {}
    if path.name not in recorded:
        return CORRUPT, f"{path.name} is not listed in its sidecar"
    for name, rec in recorded.items():
        p = path.with_name(name)
        if not p.exists():
            return CORRUPT, f"{name} is missing"
        if p.stat().st_size != rec.get("size"):
            return CORRUPT, f"{name} has {p.stat().st_size} bytes, sidecar says {rec.get('size')}"
        if verify_hash and files.sha256_remembered(p) != rec.get("sha256"):
            return CORRUPT, f"{name} does not match its recorded SHA-256"
    return VALID, "ok"


def find_artifact(key: ArtifactKey, ext: str, folder, verify_hash: bool = True) -> Optional[Path]:
    """The valid artifact for `key` in `folder`, or None."""
    path = key.path(ext, folder)
    status, _ = classify(path, key, verify_hash=verify_hash)
    return path if status == VALID else None


def inspect_slot(key: ArtifactKey, ext: str, folder) -> list:
    """[(path, status, reason)] of every file in `folder` in `key`'s slot (same kind/precision/profile)."""
    folder = Path(folder)
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
        for p in (path.with_name(name), files.hash_record_path(path.with_name(name))):
            if p.exists():
                p.unlink()


def prune_slot(key: ArtifactKey, ext: str, folder) -> list:
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


def find_onnx_graphs(bundle_id: str, precision, folder, graphs=GRAPHS) -> Optional[dict]:
    """{graph: path} when every graph of the bundle is exported (valid) in `folder`, else None."""
    out = {}
    for graph in graphs:
        path = find_artifact(onnx_key(graph, bundle_id, precision), "onnx", folder=folder)
        if path is None:
            return None
        out[graph] = path
    return out
