"""Identity profiles: the references' keys and values per shared layer (with their AdaIN statistics),
computed once at enrollment (network.py says how), stored as safetensors with the aligned reference
thumbnails."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import InstantRestoreError
from .files import atomic_path

PROFILE_FORMAT = "instantrestore-profile"


class ProfileError(InstantRestoreError):
    """A profile file is unreadable, of another format, or made for another model bundle."""


@dataclass(frozen=True)
class ReferenceKV:
    """What enrollment computes, per shared layer l: keys[l], values[l] (N, T_l, C_l) of the N references, and
    the values' mean and std over tokens (N, 1, C_l)."""

    keys: list
    values: list
    value_means: list
    value_stds: list


class Profile:
    """The enrolled references' keys, values and value statistics per shared layer (a ReferenceKV, kept as
    the same four lists), the aligned references as uint8 thumbnails (N, H, W, 3), and the references'
    identity descriptors (N, 128) (identity.py; None in profiles made before recognition)."""

    def __init__(self, bundle_id, kv: ReferenceKV, thumbnails, metadata=None, embeddings=None):
        self.bundle_id = bundle_id
        self.embeddings = embeddings
        self.keys, self.values = list(kv.keys), list(kv.values)
        self.value_means, self.value_stds = list(kv.value_means), list(kv.value_stds)
        self.thumbnails = thumbnails
        self.metadata = dict(metadata or {})

    @property
    def count(self) -> int:
        return self.keys[0].shape[0]

    def save(self, path) -> Path:
        tensors = {"thumbnails": self.thumbnails.contiguous()}
        if self.embeddings is not None:
            tensors["embeddings"] = torch.as_tensor(self.embeddings, dtype=torch.float32)
        for i, (k, v, m, s) in enumerate(zip(self.keys, self.values, self.value_means, self.value_stds)):
            tensors.update({f"layer{i}.k": k, f"layer{i}.v": v, f"layer{i}.v_mean": m, f"layer{i}.v_std": s})
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        metadata = {
            "format": PROFILE_FORMAT,
            "bundle_id": self.bundle_id,
            "layers": str(len(self.keys)),
            "count": str(self.count),
            "sha256": _tensors_digest(tensors),
            "created": self.metadata.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            "info": json.dumps({k: v for k, v in self.metadata.items() if k != "created"}),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @staticmethod
    def read_header(path) -> dict:
        """A profile file's metadata (format, bundle_id, layers, count, created, info) without its tensors."""
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except (OSError, SafetensorError) as e:
            raise ProfileError(f"{path}: not a readable profile ({' '.join(str(e).split())}); enroll again") from None
        if metadata.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{path} is not an InstantRestore profile")
        return metadata

    @classmethod
    def load(cls, path, bundle_id: str | None = None) -> "Profile":
        """Read a profile; with `bundle_id`, refuse one made for another model bundle."""
        path = Path(path)
        metadata = cls.read_header(path)
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise ProfileError(f"{path}: not a readable profile ({' '.join(str(e).split())}); enroll again") from None
        if bundle_id is not None and metadata.get("bundle_id") != bundle_id:
            raise ProfileError(
                f"{path} was enrolled with another model bundle ({metadata.get('bundle_id', '?')[:12]}, this one is "
                f"{bundle_id[:12]}); enroll again with this bundle"
            )
        # Written by save(); profiles from before it lack the digest and are checked for their values only.
        if "sha256" in metadata and metadata["sha256"] != _tensors_digest(tensors):
            raise ProfileError(f"{path} is damaged (its contents do not match the checksum written with it); "
                               "enroll again")
        try:
            layers = int(metadata["layers"])
            info = json.loads(metadata.get("info", "{}"))
            info["created"] = metadata.get("created")
            kv = ReferenceKV(
                [tensors[f"layer{i}.k"] for i in range(layers)],
                [tensors[f"layer{i}.v"] for i in range(layers)],
                [tensors[f"layer{i}.v_mean"] for i in range(layers)],
                [tensors[f"layer{i}.v_std"] for i in range(layers)],
            )
            profile = cls(
                metadata["bundle_id"],
                kv,
                tensors["thumbnails"],
                info,
                tensors.get("embeddings"),
            )
        except (KeyError, ValueError) as e:
            raise ProfileError(f"{path} is a damaged profile (missing or bad {e}); enroll again") from None
        problem = profile._problem()
        if problem:
            raise ProfileError(f"{path} is a damaged profile ({problem}); enroll again")
        return profile

    def _problem(self):
        """What makes these tensors unusable as a profile, in words, or None."""
        if not self.keys:
            return "no layers"
        n = self.count
        for i, (k, v, mean, std) in enumerate(zip(self.keys, self.values, self.value_means, self.value_stds)):
            if k.ndim != 3 or v.shape != k.shape or n == 0 or k.shape[0] != n:
                return f"layer {i} keys {tuple(k.shape)} and values {tuple(v.shape)} are not (N, T, C) alike"
            if mean.shape != (n, 1, k.shape[2]) or std.shape != mean.shape:
                return f"layer {i} value statistics have shape {tuple(mean.shape)}"
            for name, t in (("keys", k), ("values", v), ("value means", mean), ("value stds", std)):
                if not torch.isfinite(t).all():
                    return f"layer {i} {name} are not finite numbers"
            if (std < 0).any():
                return f"layer {i} value stds are negative"
        if self.thumbnails.dtype != torch.uint8 or self.thumbnails.ndim != 4 or self.thumbnails.shape[0] != n:
            return f"thumbnails are {self.thumbnails.dtype} {tuple(self.thumbnails.shape)}"
        if self.embeddings is not None:
            e = torch.as_tensor(self.embeddings)
            if e.shape != (n, 128) or not torch.isfinite(e).all():
                return f"identity descriptors are {e.dtype} {tuple(e.shape)}"
        return None


def _tensors_digest(tensors: dict) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes (safetensors itself has no checksum)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
