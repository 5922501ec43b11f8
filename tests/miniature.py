"""A miniature of the authors' release, written from random weights: a diffusers-layout base (unet,
text_encoder, tokenizer, scheduler), a VAE folder, and `final_model_ckpt.pt` in their exact layout
(peft-wrapped `unet` with adapter `default`, `vae` with adapter `vae_skip`, both with non-zero LoRA, a
retrained conv_in, the plain original nets, the text encoder, cfg and optimizer)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from instantrestore.export.random_bundle import TINY_UNET, TINY_VAE

UNET_CONFIG, VAE_CONFIG = TINY_UNET, TINY_VAE
TEXT_CONFIG = dict(
    vocab_size=400, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=32, bos_token_id=188, eos_token_id=189, pad_token_id=189,
)
UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                     "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
VAE_LORA_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_q", "to_k", "to_v", "to_out.0"]
CROP_SIZE = 128
LORA_RANK = 4


def write_tokenizer(folder: Path):
    """A character-level CLIP BPE tokenizer (no merges) covering printable ASCII."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _randomise_lora(model, generator, std=0.05):
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=generator) * std


def write_release(root, use_adain=True, train_input=False, seed=0, module_prefix=False) -> dict:
    """Write the miniature release under `root`; returns its paths (base, vae, checkpoint)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    base, vae_dir = root / "sd-turbo-mini", root / "vae-mini"
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    base_unet = UNet2DConditionModel(**UNET_CONFIG)
    base_vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    base_unet.save_pretrained(base / "unet")
    text_encoder.save_pretrained(base / "text_encoder")
    write_tokenizer(base / "tokenizer")
    EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon",
        timestep_spacing="trailing", steps_offset=1,
    ).save_pretrained(base / "scheduler")
    # sd-turbo's scheduler config carries SD 2.1's DDPM fields too; clip_sample false matters (DDPM defaults to true)
    scheduler_config = base / "scheduler" / "scheduler_config.json"
    scheduler_config.write_text(json.dumps({**json.loads(scheduler_config.read_text()), "clip_sample": False,
                                            "set_alpha_to_one": False, "skip_prk_steps": True}, indent=2))
    base_vae.save_pretrained(vae_dir)

    unet = copy.deepcopy(base_unet)
    unet.conv_in.weight.data = torch.randn(unet.conv_in.weight.shape, generator=generator) * 0.1  # retrained
    unet = inject_adapter_in_model(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK // 2, target_modules=UNET_LORA_TARGETS), unet, adapter_name="default"
    )
    vae = inject_adapter_in_model(
        LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK // 2, target_modules=VAE_LORA_TARGETS),
        copy.deepcopy(base_vae), adapter_name="vae_skip",
    )
    _randomise_lora(unet, generator)
    _randomise_lora(vae, generator)

    prefix = "net.module." if module_prefix else "net."
    state_dict = {}
    for net, module in (("unet", unet), ("vae", vae), ("original_unet", base_unet), ("original_vae", base_vae),
                        ("text_encoder", text_encoder)):
        state_dict.update({f"{prefix}{net}.{k}": v.clone() for k, v in module.state_dict().items()})
    cfg = {
        "model": {"lora_rank_unet": LORA_RANK, "lora_rank_vae": LORA_RANK, "use_adain": use_adain,
                  "train_input": train_input, "use_shortcuts": False},
        "data": {"max_conditioning_images": 4},
    }
    checkpoint = root / "final_model_ckpt.pt"
    torch.save({"state_dict": state_dict, "cfg": cfg, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}},
               checkpoint)
    return {"root": root, "base": base, "vae": vae_dir, "checkpoint": checkpoint}
