"""The model bundle: one folder with `config.json` and `weights.safetensors` (merged weights of restorer and
enroller plus the prompt embedding). Written by `instantrestore.export`, read here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

BUNDLE_FORMAT = "instantrestore-bundle"
BUNDLE_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


class BundleError(Exception):
    """A model bundle is missing, incomplete or of another format."""


@dataclass
class Bundle:
    path: Path
    config: dict

    @property
    def bundle_id(self) -> str:
        return self.config["bundle_id"]

    @property
    def crop_size(self) -> int:
        return int(self.config["crop_size"])

    @property
    def latent_size(self) -> int:
        return int(self.config["latent_size"])

    @property
    def latent_channels(self) -> int:
        return int(self.config["vae_config"]["latent_channels"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config["dtype"]]

    @property
    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self.config["shared_layers"]]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return [(layer["tokens"], layer["channels"]) for layer in self.config["shared_layers"]]

    @property
    def reference_slots(self) -> int:
        """Fewer references than this are repeated in turn up to it (the release trains with 4)."""
        return int(self.config["max_references"])

    def settings(self) -> dict:
        """The flat settings the networks are built from."""
        c = self.config
        return {
            "latent_size": self.latent_size,
            "freeu": c["freeu"],
            "use_adain": bool(c["use_adain"]),
            "train_input": bool(c["train_input"]),
            "timestep": int(c["restorer"]["timestep"]),
            "alpha_cumprod": float(c["restorer"]["alpha_cumprod"]),
            "prediction_type": c["restorer"]["prediction_type"],
            "clip_sample": bool(c["restorer"]["clip_sample"]),
            "clip_sample_range": float(c["restorer"]["clip_sample_range"]),
            "ref_timestep": int(c["enroller"]["timestep"]),
            "ref_alpha_cumprod": float(c["enroller"]["alpha_cumprod"]),
        }

    def tensors(self, prefix: str, device="cpu") -> dict[str, torch.Tensor]:
        """All stored tensors whose key starts with `prefix`, with the prefix removed."""
        out = {}
        with safe_open(str(self.path / WEIGHTS_NAME), framework="pt", device=str(device)) as f:
            for key in f.keys():
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = f.get_tensor(key)
        return out


def load_bundle(path) -> Bundle:
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no {CONFIG_NAME}); create one with `instantrestore export`")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{config_path} is unreadable: {e}") from None
    if config.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an InstantRestore model bundle")
    if config.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{path} is a bundle of version {config.get('version')}, this release reads version {BUNDLE_VERSION}; "
            "export it again"
        )
    if not (path / WEIGHTS_NAME).is_file():
        raise BundleError(f"{path} is incomplete: {WEIGHTS_NAME} is missing; export it again")
    return Bundle(path=path, config=config)
