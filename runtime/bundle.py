"""The model bundle: one folder with `config.json` and `weights.safetensors` (merged weights of restorer and
enroller plus the prompt embedding). Written by `instantrestore.export`, read here."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import InstantRestoreError
from .files import remembered_sha256, sha256_remembered
from .model_config import ModelConfig, ModelConfigError
from .schema import instance_of, schema_problem, whole

BUNDLE_FORMAT = "instantrestore-bundle"
BUNDLE_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
CROP_SIZES = (64, 2048)  # the release uses 512; outside this a config value is damage, not a model
NETS = ("restorer.unet.", "restorer.vae.", "enroller.unet.", "enroller.vae.")


class BundleError(InstantRestoreError):
    """A model bundle is missing, incomplete, damaged or of another format."""


# config.json's schema besides the model config's (model_config.MODEL_SCHEMA): dotted field -> (check, what it must
# be). Cross-field rules are in _config_problem.
SCHEMA = {
    "bundle_id": (lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v), "a 64-digit hex content hash"),
    "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "crop_size": (whole(*CROP_SIZES), f"a whole number from {CROP_SIZES[0]} to {CROP_SIZES[1]}"),
    "latent_size": (whole(1, CROP_SIZES[1]), "a positive whole number"),
    "vae_scale_factor": (lambda v: whole(1, 64)(v) and v & (v - 1) == 0, "a power of two"),
    "unet_config": (instance_of(dict), "an object"),
    "vae_config": (instance_of(dict), "an object"),
    "vae_config.latent_channels": (whole(1, 64), "a whole number from 1 to 64"),
    "shared_layers": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of layers"),
}


@dataclass
class Bundle:
    path: Path
    config: dict  # config.json as read
    model: ModelConfig  # what the method computes with, from the config

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
    def random_weights(self) -> bool:
        """A bundle of random weights (`instantrestore demo`, `bench --random`), not the real model: its
        export records the architecture under source.random."""
        source = self.config.get("source")
        return isinstance(source, dict) and "random" in source

    @property
    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self.config["shared_layers"]]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        return [(layer["tokens"], layer["channels"]) for layer in self.config["shared_layers"]]

    def tensors(self, prefix: str, device="cpu") -> dict[str, torch.Tensor]:
        """All stored tensors whose key starts with `prefix`, with the prefix removed."""
        out = {}
        with safe_open(str(self.path / WEIGHTS_NAME), framework="pt", device=str(device)) as f:
            for key in f.keys():
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = f.get_tensor(key)
        return out


def load_bundle(path) -> Bundle:
    """The bundle in folder `path`, checked before anything uses it: its config against the schema, its
    weights file's structure against the config's architecture, and its content against its bundle id (the
    hash the exporter wrote). Anything wrong is a BundleError naming the file, with "export it again"."""
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no {CONFIG_NAME}); create one with `instantrestore export`")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{config_path} is unreadable: {e}; export it again") from None
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an InstantRestore model bundle")
    if config.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{path} is a bundle of version {config.get('version')}, this release reads version {BUNDLE_VERSION}; "
            "export it again"
        )
    problem = _config_problem(config)
    if problem:
        raise BundleError(f"{config_path}: {problem}; export the bundle again")
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{path} is incomplete: {WEIGHTS_NAME} is missing; export it again")
    # A file checked before and unchanged since (see sha256_remembered) had its structure checked then; the
    # check imports diffusers, seconds that `profiles` and `doctor` need not pay on every run.
    if remembered_sha256(weights) is None:
        problem = _weights_problem(weights, config)
        if problem:
            raise BundleError(f"{weights}: {problem}; export the bundle again")
    if content_id(config, sha256_remembered(weights)) != config["bundle_id"]:
        raise BundleError(f"{path} was changed or damaged after export: its files do not match its bundle id; "
                          "export it again")
    return Bundle(path=path, config=config, model=ModelConfig.from_dict(config))


def content_id(config: dict, weights_sha256: str) -> str:
    """The bundle id the exporter writes: the config (without its source notes and the id itself) and the
    weights' SHA-256. Anything that changes what the runtime computes changes it."""
    identity = {k: v for k, v in config.items() if k not in ("source", "bundle_id")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(weights_sha256.encode())
    return digest.hexdigest()


def _config_problem(config: dict):
    """What is wrong with a bundle config, in words, or None."""
    problem = schema_problem(config, SCHEMA)
    if problem:
        return problem
    try:
        ModelConfig.from_dict(config)
    except ModelConfigError as e:
        return str(e)
    if config["crop_size"] != config["latent_size"] * config["vae_scale_factor"]:
        return (f"crop_size {config['crop_size']} is not latent_size {config['latent_size']} x vae_scale_factor "
                f"{config['vae_scale_factor']}")
    for i, layer in enumerate(config["shared_layers"]):
        if not (isinstance(layer, dict) and isinstance(layer.get("name"), str)
                and whole(1, config["latent_size"] ** 2)(layer.get("tokens"))
                and whole(1, 65536)(layer.get("channels"))):
            return f"shared_layers[{i}] is not a layer (name, tokens up to latent_size squared, channels)"
    return None


def _weights_problem(weights: Path, config: dict):
    """What is wrong with the weights file's structure (readable, every network there, shapes that fit the
    config's architecture), or None. Reads only the header: no tensor is allocated."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (OSError, SafetensorError) as e:
        return f"not a readable weights file ({' '.join(str(e).split())})"
    width = config["unet_config"].get("cross_attention_dim")
    prompt = shapes.get("prompt_embedding")
    if prompt is None or len(prompt) != 3 or prompt[:1] != (1,) or prompt[2] != width or prompt[1] < 1:
        return f"the prompt embedding has shape {prompt}, expected (1, tokens, {width})"
    architecture = {}
    for prefix in NETS:
        kind = prefix.split(".")[1]
        if kind not in architecture:
            architecture[kind] = _architecture_shapes(kind, config)
        expected = architecture[kind]
        if isinstance(expected, str):
            return expected
        got = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        if not got:
            return f"no {prefix.rstrip('.')} weights"
        if prefix == "enroller.vae.":  # the enroller only encodes
            expected = {k: v for k, v in expected.items() if not k.startswith(("decoder.", "post_quant_conv."))}
        for name, shape in expected.items():
            if got.get(name) != shape:
                return f"{prefix}{name} has shape {got.get(name)}, the config's architecture needs {shape}"
        extra = sorted(set(got) - set(expected))
        if extra:
            return f"{prefix}{extra[0]} is not part of the config's architecture"
    return None


def _architecture_shapes(kind: str, config: dict):
    """{parameter name: shape} of the config's "unet" or "vae", built on the meta device (no memory); a
    message when the config describes no network diffusers can build."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cls = UNet2DConditionModel if kind == "unet" else AutoencoderKL
    try:
        with torch.device("meta"):
            module = cls.from_config(config[f"{kind}_config"])
    except Exception as e:  # noqa: BLE001 - diffusers raises assorted errors for configs it cannot build
        return f"its {kind}_config describes no network ({type(e).__name__}: {' '.join(str(e).split())[:100]})"
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
