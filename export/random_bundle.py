"""Bundles with random weights in a known architecture, so speed can be measured without downloads:
"sd-turbo" is SD-Turbo's UNet with sd-vae-ft-mse's VAE (512 crops); "tiny" is the miniature used in tests."""

from __future__ import annotations

from pathlib import Path

import torch

from instantrestore.runtime.model_config import ModelConfig

from .bundle_writer import BundleContents, write_bundle

SD_TURBO_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SD_VAE_FT_MSE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=256,
    scaling_factor=0.18215,
)
TINY_UNET = dict(
    SD_TURBO_UNET, sample_size=16, block_out_channels=(32, 32, 64, 64), cross_attention_dim=32,
    attention_head_dim=(2, 2, 4, 4), norm_num_groups=8,
)
TINY_VAE = dict(SD_VAE_FT_MSE, block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=128)
# SD-Turbo's noise schedule (scaled-linear betas), with SD 2.1's DDPM fields
SD_TURBO_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)
ARCHITECTURES = {"sd-turbo": (SD_TURBO_UNET, SD_VAE_FT_MSE), "tiny": (TINY_UNET, TINY_VAE)}


def write_random_bundle(kind: str, out, dtype="float16", seed=0, device="cpu", progress=None) -> Path:
    """A bundle of architecture `kind` with random weights (initialised on `device`, which is much faster
    on a GPU for sd-turbo's 865M UNet parameters)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {kind!r}; choose one of: {', '.join(ARCHITECTURES)}")
    unet_config, vae_config = ARCHITECTURES[kind]
    torch.manual_seed(seed)
    if progress:
        progress(f"initialising random {kind} weights")
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        prompt = torch.randn(1, 77, unet_config["cross_attention_dim"])
    unet_weights = {k: v.cpu() for k, v in unet.state_dict().items()}
    vae_weights = {k: v.cpu() for k, v in vae.state_dict().items()}
    encoder = {k: v.clone() for k, v in vae_weights.items() if not k.startswith(("decoder.", "post_quant_conv."))}
    nets = {"restorer.unet.": unet_weights, "restorer.vae.": vae_weights,
            "enroller.unet.": {k: v.clone() for k, v in unet_weights.items()}, "enroller.vae.": encoder}
    contents = BundleContents(unet, vae, SD_TURBO_SCHEDULER, ModelConfig(), nets, prompt.cpu(),
                              {"random": kind, "seed": seed})
    return write_bundle(out, contents, dtype, progress)
