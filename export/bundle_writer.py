"""Writing a model bundle folder (config.json + safetensors): its config worked out from the architecture, the
model config and the base's noise schedule, swapped in whole so a failure or a signal leaves no partial bundle."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from instantrestore.runtime.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, CONFIG_NAME, DTYPES, WEIGHTS_NAME, content_id
from instantrestore.runtime.files import new_temp, sha256_file
from instantrestore.runtime.model_config import ModelConfig
from instantrestore.runtime.network import shared_layer_names, up_block_resolution

from .errors import CheckpointError
from .progress import report


@dataclasses.dataclass(frozen=True)
class BundleContents:
    """What a bundle holds: `nets` maps a key prefix ("restorer.unet.", ...) to plain merged weights; `unet` and
    `vae` are modules (meta is fine) of the architecture; `model` is written with the noise schedule's values at
    its timesteps taken from `scheduler_config`, the base's; `source` notes where the weights came from."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    model: ModelConfig
    nets: dict
    prompt_embedding: torch.Tensor
    source: dict = dataclasses.field(default_factory=dict)


def write_bundle(out, contents: BundleContents, dtype: str, progress=None) -> Path:
    """Write the bundle of `contents` to the folder `out`, its weights in `dtype`."""
    from diffusers import DDPMScheduler

    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose float16 or float32")
    out = Path(out)
    scheduler = DDPMScheduler.from_config(contents.scheduler_config)
    if scheduler.config.thresholding:
        raise CheckpointError("the base's scheduler uses dynamic thresholding, which a one-step restorer cannot apply")
    alphas = scheduler.alphas_cumprod
    model = dataclasses.replace(
        contents.model,
        restore_alpha_cumprod=float(alphas[contents.model.restore_timestep]),
        reference_alpha_cumprod=float(alphas[contents.model.reference_timestep]),
        prediction_type=scheduler.config.prediction_type,
        clip_sample=bool(scheduler.config.clip_sample),
        clip_sample_range=float(scheduler.config.clip_sample_range),
    )
    unet_config = {k: v for k, v in contents.unet.config.items() if not k.startswith("_")}
    vae_config = {k: v for k, v in contents.vae.config.items() if not k.startswith("_")}
    scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    latent_size = int(unet_config["sample_size"])
    reversed_channels = list(reversed(unet_config["block_out_channels"]))
    layers = []
    for name in shared_layer_names(contents.unet):
        block = int(name.split(".")[1])
        size = up_block_resolution(unet_config, latent_size, block)
        layers.append({"name": name, "tokens": size * size, "channels": reversed_channels[block]})

    tensors = {"prompt_embedding": contents.prompt_embedding}
    for prefix, weights in contents.nets.items():
        tensors.update({prefix + k: v for k, v in weights.items()})
    tensors = {k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}

    config = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "dtype": dtype,
        "crop_size": latent_size * scale_factor,
        "latent_size": latent_size,
        "vae_scale_factor": scale_factor,
        "unet_config": unet_config,
        "vae_config": vae_config,
        **model.to_dict(),
        "shared_layers": layers,
        "source": {**contents.source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    report(progress, f"writing {len(tensors)} tensors ({dtype}) to {out}")
    try:
        _write_bundle(out, config, tensors)
    except OSError as error:  # the file system's refusal (no space, read-only, a file where a folder must be)
        raise CheckpointError(f"cannot write the bundle to {out}: {error.strerror or error}") from None
    report(progress, f"bundle {config['bundle_id'][:12]} written to {out}")
    return out


def check_bundle_destination(out: Path) -> None:
    """`export` replaces only a bundle it wrote; any other existing file or folder (a diffusers model folder
    has a config.json too) is refused, never deleted."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and (not any(out.iterdir()) or _is_bundle_folder(out)):
        return
    raise CheckpointError(f"{out} exists and is not a model bundle (export replaces only a bundle it wrote); "
                          "choose another --out")


def _is_bundle_folder(folder: Path) -> bool:
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == BUNDLE_FORMAT


def _write_bundle(out: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write into a temporary folder beside `out`, then swap it in: a failure or a signal leaves no partial
    bundle, and what a killed export left behind (its temp folder, the previous bundle moved aside) is removed
    or put back by the next one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(f".{out.name}.old")
    if not out.exists() and _is_bundle_folder(old):
        os.replace(old, out)  # killed between the two renames below: the previous bundle comes back
    check_bundle_destination(out)
    tmp = new_temp(out, folder=True)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would carry over: a bundle is an ordinary folder
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        config["bundle_id"] = content_id(config, sha256_file(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        if out.exists():
            check_bundle_destination(out)  # again: the folder may have changed during the minutes of work
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # put the previous bundle back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
