"""Import the authors' release (`final_model_ckpt.pt` + the SD-Turbo and sd-vae-ft-mse configs) into a
model bundle: LoRA merged into plain weights, only what restore and enroll need, safetensors + JSON."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from instantrestore.runtime.artifacts import sha256_file
from instantrestore.runtime.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, CONFIG_NAME, DTYPES, WEIGHTS_NAME
from instantrestore.runtime.network import shared_layer_names, up_block_resolution

PROMPT = "A high-quality photo of a person; professional, 8k"
RESTORE_TIMESTEP = 249
REFERENCE_TIMESTEP = 1
FREEU = {"b1": 1.4, "b2": 1.6, "s1": 0.9, "s2": 0.2}
# adapter name of each LoRA-wrapped net in the release
ADAPTERS = {"unet": "default", "vae": "vae_skip"}
BASE_FILES = ["unet/config.json", "text_encoder/config.json", "tokenizer/*", "scheduler/scheduler_config.json"]


class CheckpointError(Exception):
    """The checkpoint, base or VAE given to the importer is not what the importer expects."""


def report(progress, message) -> None:
    """Pass a progress message on to the caller's callback, if any."""
    if progress:
        progress(message)


# ------------------------------------------------------------------------------------------- reading


def read_checkpoint(path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The release's state dict split by net ('unet', 'vae', 'original_unet', 'original_vae',
    'text_encoder'), and its cfg. Loaded with weights_only=True: the file comes from the internet."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # memory-mapped where the format allows it: the release holds several multi-GB nets
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # the weights-only unpickler names what it refused (a GLOBAL: code or a class it would construct)
        refused = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if refused:
            raise CheckpointError(f"refused {path}: it holds more than tensors and plain data ({refused[0]})") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unreadable pickle)") from None
    except Exception as e:  # torch raises assorted errors for files that are not torch archives
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or not isinstance(blob["state_dict"], dict):
        raise CheckpointError(f"{path} is not an InstantRestore checkpoint (no 'state_dict')")
    nets: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in blob["state_dict"].items():
        for prefix in ("net.module.", "net."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        else:
            raise CheckpointError(f"{path} is not an InstantRestore checkpoint (unexpected key {key!r})")
        net, _, name = key.partition(".")
        if torch.is_tensor(value):
            nets.setdefault(net, {})[name] = value
    missing = [n for n in ("unet", "vae", "original_unet", "original_vae", "text_encoder") if n not in nets]
    if missing:
        raise CheckpointError(f"{path} is not an InstantRestore checkpoint (no weights for {', '.join(missing)})")
    return nets, blob.get("cfg") or {}


def merge_lora(weights: dict[str, torch.Tensor], adapter: str) -> tuple[dict[str, torch.Tensor], int]:
    """Plain weights from peft-wrapped ones: W = W0 + (alpha / r) B A with alpha = r // 2, r read from
    the weights. Returns the merged dict and the number of LoRA modules merged."""
    merged, lora = {}, {}
    for key, value in weights.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.{adapter}.weight"
            if key.endswith(marker):
                lora.setdefault(key[: -len(marker)], {})[part] = value
                break
        else:
            if ".lora_" in key or ".lora_magnitude" in key:
                raise CheckpointError(f"unsupported adapter weight {key!r} (expected adapter {adapter!r})")
            merged[key.replace(".base_layer.", ".")] = value
    for module, pair in lora.items():
        if set(pair) != {"lora_A", "lora_B"} or f"{module}.weight" not in merged:
            raise CheckpointError(f"incomplete LoRA weights for {module!r}")
        a, b = pair["lora_A"].double(), pair["lora_B"].double()
        rank = a.shape[0]
        scale = (rank // 2) / rank
        base = merged[f"{module}.weight"]
        if a.ndim == 2:  # linear: A (r, in), B (out, r)
            delta = b @ a
        else:  # conv: A (r, in, kh, kw), B (out, r, 1, 1)
            delta = torch.einsum("or,rihw->oihw", b.flatten(1), a)
        merged[f"{module}.weight"] = (base.double() + scale * delta).to(base.dtype)
    return merged, len(lora)


# ------------------------------------------------------------------------------ base and VAE folders


def resolve_source(source, files: list[str], what: str) -> Path:
    """A local diffusers-layout folder, or a hub id fetched (configs and tokenizer only: the weights
    come from the checkpoint)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or "/" not in str(source) or str(source).count("/") > 1:
        raise CheckpointError(f"{what} {source!r} is neither a folder nor a hub id like 'stabilityai/sd-turbo'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), allow_patterns=files))
    except Exception as e:
        raise CheckpointError(f"could not fetch {what} {source!r} from the hub: {str(e).splitlines()[0]}") from None


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{what}: cannot read {path} ({e})") from None


def _prompt_embedding(base: Path, text_weights: dict[str, torch.Tensor]) -> torch.Tensor:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(base / "text_encoder"))
    missing, unexpected = encoder.load_state_dict({k: v.float() for k, v in text_weights.items()}, strict=False)
    # old transformers releases stored position_ids as a buffer; current ones rebuild it
    stray = [k for k in missing + unexpected if not k.endswith("position_ids")]
    if stray:
        raise CheckpointError(f"text encoder weights do not fit the base's config: {stray[:5]}")
    length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)  # 77 for CLIP
    ids = tokenizer(PROMPT, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return encoder.eval()(ids.input_ids)[0].float().clone()


def _check_fits(cls, config: dict, weights: dict, what: str, optional=()):
    with torch.device("meta"):
        module = cls.from_config(config)
    expected = set(module.state_dict())
    missing = sorted(k for k in expected - set(weights) if not k.startswith(optional))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{what} weights do not fit the config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return module


# ------------------------------------------------------------------------------------------- import


def import_checkpoint(checkpoint, base="stabilityai/sd-turbo", vae="stabilityai/sd-vae-ft-mse", out="bundle",
                      dtype="float16", progress=None) -> Path:
    """Write a model bundle folder `out` from the authors' checkpoint; returns its path."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose float16 or float32")
    report(progress, f"reading checkpoint {checkpoint}")
    nets, cfg = read_checkpoint(checkpoint)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{checkpoint} is not an InstantRestore checkpoint ('cfg' is not a dict)")
    model_cfg = cfg.get("model") or {}
    if model_cfg.get("use_shortcuts"):
        raise CheckpointError("this checkpoint uses VAE skip connections (use_shortcuts: true), which are not supported")

    base_dir = resolve_source(base, BASE_FILES, "base")
    vae_dir = resolve_source(vae, ["config.json"], "vae")
    unet_config = _read_json(base_dir / "unet" / "config.json", "base")
    vae_config = _read_json(vae_dir / "config.json", "vae")
    scheduler_config = _read_json(base_dir / "scheduler" / "scheduler_config.json", "base")

    report(progress, "merging LoRA weights")
    unet, unet_loras = merge_lora(nets["unet"], ADAPTERS["unet"])
    vae_weights, vae_loras = merge_lora(nets["vae"], ADAPTERS["vae"])
    unet_module = _check_fits(UNet2DConditionModel, unet_config, unet, "restorer UNet")
    _check_fits(UNet2DConditionModel, unet_config, nets["original_unet"], "reference UNet")
    vae_module = _check_fits(AutoencoderKL, vae_config, vae_weights, "restorer VAE")
    encoder_only = ("decoder.", "post_quant_conv.")
    original_vae = {k: v for k, v in nets["original_vae"].items() if not k.startswith(encoder_only)}
    _check_fits(AutoencoderKL, vae_config, original_vae, "reference VAE", optional=encoder_only)
    report(progress, f"merged {unet_loras} UNet and {vae_loras} VAE LoRA modules")

    report(progress, "encoding the prompt")
    prompt_embedding = _prompt_embedding(base_dir, nets["text_encoder"])
    flags = {
        "use_adain": bool(model_cfg.get("use_adain", True)),
        "train_input": bool(model_cfg.get("train_input", False)),
        "max_references": int((cfg.get("data") or {}).get("max_conditioning_images", 4)),
    }
    source = {
        "checkpoint": Path(checkpoint).name,
        "checkpoint_sha256": sha256_file(Path(checkpoint)),
        "base": str(base),
        "vae": str(vae),
        "lora": {"unet_modules": unet_loras, "vae_modules": vae_loras},
    }
    nets = {"restorer.unet.": unet, "restorer.vae.": vae_weights, "enroller.unet.": nets["original_unet"],
            "enroller.vae.": original_vae}
    return write_bundle(out, unet_module, vae_module, scheduler_config, flags, nets, prompt_embedding, dtype,
                        source, progress)


def write_bundle(out, unet, vae, scheduler_config: dict, flags: dict, nets: dict, prompt_embedding, dtype: str,
                 source: dict, progress=None) -> Path:
    """Write a bundle: `nets` maps a key prefix ("restorer.unet.", ...) to plain merged weights; `unet` and
    `vae` are modules (meta is fine) of the architecture; flags: use_adain, train_input, max_references."""
    from diffusers import DDPMScheduler

    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose float16 or float32")
    out = Path(out)
    scheduler = DDPMScheduler.from_config(scheduler_config)
    if scheduler.config.thresholding:
        raise CheckpointError("the base's scheduler uses dynamic thresholding, which a one-step restorer cannot apply")
    alphas = scheduler.alphas_cumprod
    unet_config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    vae_config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    latent_size = int(unet_config["sample_size"])
    reversed_channels = list(reversed(unet_config["block_out_channels"]))
    layers = []
    for name in shared_layer_names(unet):
        block = int(name.split(".")[1])
        size = up_block_resolution(unet_config, latent_size, block)
        layers.append({"name": name, "tokens": size * size, "channels": reversed_channels[block]})

    tensors = {"prompt_embedding": prompt_embedding}
    for prefix, weights in nets.items():
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
        "restorer": {
            "timestep": RESTORE_TIMESTEP,
            "alpha_cumprod": float(alphas[RESTORE_TIMESTEP]),
            "prediction_type": scheduler.config.prediction_type,
            "clip_sample": bool(scheduler.config.clip_sample),
            "clip_sample_range": float(scheduler.config.clip_sample_range),
        },
        "enroller": {"timestep": REFERENCE_TIMESTEP, "alpha_cumprod": float(alphas[REFERENCE_TIMESTEP])},
        "freeu": FREEU,
        **flags,
        "prompt": PROMPT,
        "shared_layers": layers,
        "source": {**source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    report(progress, f"writing {len(tensors)} tensors ({dtype}) to {out}")
    _write_bundle(out, config, tensors)
    report(progress, f"bundle {config['bundle_id'][:12]} written to {out}")
    return out


def _write_bundle(out: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write into a temporary folder beside `out`, then swap it in: a failure leaves no partial bundle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        identity = {k: v for k, v in config.items() if k != "source"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
        digest.update(sha256_file(tmp / WEIGHTS_NAME).encode())
        config["bundle_id"] = digest.hexdigest()
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        if out.exists():
            if not (out / CONFIG_NAME).is_file() and any(out.iterdir()):
                raise CheckpointError(f"{out} exists and is not a model bundle; choose another --out")
            old = out.with_name(f".{out.name}.old")
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
