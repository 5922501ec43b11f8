"""A miniature of the authors' release, written from random weights with the release's exact names, whatever
the installed libraries would write:

- `final_model_ckpt.pt` as the authors saved it with transformers 4.37, diffusers 0.24 and peft 0.10: keys
  `net.` (or `net.module.`) + `unet.` / `vae.` (peft-wrapped: `<module>.base_layer.*`, `<module>.lora_A.<adapter>
  .weight`, `<module>.lora_B.<adapter>.weight`, adapters `default` and `vae_skip`, non-zero LoRA, a retrained
  conv_in), `original_unet.` / `original_vae.` (plain), `text_encoder.text_model.*` (transformers 4.x's level,
  which transformers 5 no longer has); plus `cfg` and `optimizer`.
- the base folder in the hub layout of `stabilityai/sd-turbo` (model_index.json, unet, text_encoder with its
  weights under `text_model.`, a CLIP tokenizer in the 4.x file format whose pad token is "!", the Euler
  scheduler config), and the VAE folder as `stabilityai/sd-vae-ft-mse` has it (a diffusers 0.4 config without
  scaling_factor).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from instantrestore.export.random_bundle import TINY_UNET, TINY_VAE

UNET_CONFIG, VAE_CONFIG = TINY_UNET, TINY_VAE
# sd-turbo's text encoder config (OpenCLIP ViT-H's text tower: gelu, CLIP's token ids), at miniature size
TEXT_CONFIG = dict(
    vocab_size=400, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=32, hidden_act="gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                     "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
VAE_LORA_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_q", "to_k", "to_v", "to_out.0"]
ADAPTERS = {"unet": "default", "vae": "vae_skip"}
CROP_SIZE = 128
LORA_RANK = 4
# the versions the release's files were written with
DIFFUSERS_VERSION, TRANSFORMERS_VERSION = "0.24.0.dev0", "4.37.2"
TEXT_MODEL_LEVEL = "text_model."
# a peft 0.10 key of an adapted module: <module>.base_layer.<param> or <module>.lora_{A,B}.<adapter>.weight
PEFT_KEY = re.compile(r"^(?P<module>.+)\.(?:base_layer\.(?:weight|bias)|lora_[AB]\.(?P<adapter>[^.]+)\.weight)$")


def release_text_keys(weights: dict) -> dict:
    """CLIPTextModel weights named as transformers 4.x saves them (under `text_model.`)."""
    return {(k if k.startswith(TEXT_MODEL_LEVEL) else TEXT_MODEL_LEVEL + k): v for k, v in weights.items()}


def release_peft_keys(weights: dict, adapter: str) -> dict:
    """A peft-wrapped net's weights as peft 0.10 saves them; refuses names it would not have written."""
    out = {}
    for key, value in weights.items():
        match = PEFT_KEY.match(key)
        if ".lora_" in key and not (match and match["adapter"] == adapter):
            raise AssertionError(f"the installed peft wrote {key!r}, which peft 0.10 does not: teach the fixture")
        out[key] = value
    if not any(".lora_A." in k for k in out) or not any(".base_layer." in k for k in out):
        raise AssertionError("no peft-wrapped modules: the installed peft did not wrap the net")
    return out


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_tokenizer(folder: Path) -> None:
    """A character-level CLIP BPE tokenizer (no merges) covering printable ASCII, in the files and the 4.x
    format of sd-turbo's tokenizer folder (its pad token is "!", id 0, as in SD 2.x)."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n")

    def token(text):
        return {"content": text, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    special = {"bos_token": token("<|startoftext|>"), "eos_token": token("<|endoftext|>"), "pad_token": "!",
               "unk_token": token("<|endoftext|>")}
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
        "name_or_path": "stabilityai/sd-turbo", "tokenizer_class": "CLIPTokenizer",
        **{k: ({"__type": "AddedToken", **v} if isinstance(v, dict) else v) for k, v in special.items()},
    })


def _diffusers_config(module, class_name: str, version: str = DIFFUSERS_VERSION) -> dict:
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in module.config.items() if not k.startswith("_")}
    return {"_class_name": class_name, "_diffusers_version": version, **config}


def write_base(base: Path, unet, text_encoder) -> None:
    """The hub layout of stabilityai/sd-turbo, at miniature size."""
    write_json(base / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    write_json(base / "unet" / "config.json", _diffusers_config(unet, "UNet2DConditionModel"))
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(base / "unet" / "diffusion_pytorch_model.safetensors"))
    write_json(base / "text_encoder" / "config.json", {
        "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0,
        "initializer_range": 0.02, "layer_norm_eps": 1e-05, "model_type": "clip_text_model", "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION, **TEXT_CONFIG,
    })
    save_file({k: v.contiguous() for k, v in release_text_keys(text_encoder.state_dict()).items()},
              str(base / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(base / "tokenizer")
    write_json(base / "scheduler" / "scheduler_config.json", {  # sd-turbo's, verbatim
        "_class_name": "EulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing",
        "timestep_type": "discrete", "trained_betas": None, "use_karras_sigmas": False,
    })


def write_vae(folder: Path) -> None:
    """sd-vae-ft-mse's folder: a config from diffusers 0.4, which has no scaling_factor (0.18215 by default)."""
    keys = ("act_fn", "block_out_channels", "down_block_types", "in_channels", "latent_channels", "layers_per_block",
            "norm_num_groups", "out_channels", "sample_size", "up_block_types")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in VAE_CONFIG.items() if k in keys}
    write_json(folder / "config.json", {"_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2",
                                        "act_fn": "silu", **config})


def _randomise_lora(model, generator, std=0.05):
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=generator) * std


def write_release(root, use_adain=True, train_input=False, seed=0, module_prefix=False, model_cfg=None) -> dict:
    """Write the miniature release under `root`; returns its paths (base, vae, checkpoint). `model_cfg`, when
    given, replaces cfg["model"] as written (e.g. an older cfg without use_adain / train_input)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    base, vae_dir = root / "sd-turbo-mini", root / "vae-mini"
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    base_unet = UNet2DConditionModel(**UNET_CONFIG)
    base_vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    write_base(base, base_unet, text_encoder)
    write_vae(vae_dir)

    unet = copy.deepcopy(base_unet)
    unet.conv_in.weight.data = torch.randn(unet.conv_in.weight.shape, generator=generator) * 0.1  # retrained
    unet = inject_adapter_in_model(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK // 2, target_modules=UNET_LORA_TARGETS), unet,
        adapter_name=ADAPTERS["unet"],
    )
    vae = inject_adapter_in_model(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK // 2, target_modules=VAE_LORA_TARGETS),
        copy.deepcopy(base_vae), adapter_name=ADAPTERS["vae"],
    )
    _randomise_lora(unet, generator)
    _randomise_lora(vae, generator)

    nets = {
        "unet": release_peft_keys(unet.state_dict(), ADAPTERS["unet"]),
        "vae": release_peft_keys(vae.state_dict(), ADAPTERS["vae"]),
        "original_unet": base_unet.state_dict(),
        "original_vae": base_vae.state_dict(),
        "text_encoder": release_text_keys(text_encoder.state_dict()),
    }
    prefix = "net.module." if module_prefix else "net."
    state_dict = {f"{prefix}{net}.{k}": v.clone() for net, weights in nets.items() for k, v in weights.items()}
    if model_cfg is None:
        model_cfg = {"lora_rank_unet": LORA_RANK, "lora_rank_vae": LORA_RANK, "use_adain": use_adain,
                     "train_input": train_input, "use_shortcuts": False}
    cfg = {"model": model_cfg, "data": {"max_conditioning_images": 4}}
    checkpoint = root / "final_model_ckpt.pt"
    torch.save({"state_dict": state_dict, "cfg": cfg, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}},
               checkpoint)
    return {"root": root, "base": base, "vae": vae_dir, "checkpoint": checkpoint}
