"""The model bundle's config.json and the typed model config in it: export writes the config the runtime
reads back, and bundles written before the config was typed still load."""

import dataclasses
import json

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from instantrestore.export.checkpoint import write_bundle
from instantrestore.export.random_bundle import SD_TURBO_SCHEDULER, TINY_UNET, TINY_VAE, write_random_bundle
from instantrestore.runtime import load_bundle
from instantrestore.runtime.files import sha256_file
from instantrestore.runtime.bundle import CONFIG_NAME, WEIGHTS_NAME, content_id
from instantrestore.runtime.network import FreeUFactors, ModelConfig

# config.json of write_random_bundle("tiny", dtype="float32", seed=0) as the exporter wrote it before the model
# config was typed (bundle.settings() days), and the SHA-256 of the weights written with it.
OLD_FORMAT_CONFIG = {"format": "instantrestore-bundle",
                     "version": 1,
                     "dtype": "float32",
                     "crop_size": 128,
                     "latent_size": 16,
                     "vae_scale_factor": 8,
                     "unet_config": {"sample_size": 16,
                                     "in_channels": 4,
                                     "out_channels": 4,
                                     "center_input_sample": False,
                                     "flip_sin_to_cos": True,
                                     "freq_shift": 0,
                                     "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                          "CrossAttnDownBlock2D", "DownBlock2D"],
                                     "mid_block_type": "UNetMidBlock2DCrossAttn",
                                     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                        "CrossAttnUpBlock2D"],
                                     "only_cross_attention": False,
                                     "block_out_channels": [32, 32, 64, 64],
                                     "layers_per_block": 2,
                                     "downsample_padding": 1,
                                     "mid_block_scale_factor": 1,
                                     "dropout": 0.0,
                                     "act_fn": "silu",
                                     "norm_num_groups": 8,
                                     "norm_eps": 1e-05,
                                     "cross_attention_dim": 32,
                                     "transformer_layers_per_block": 1,
                                     "reverse_transformer_layers_per_block": None,
                                     "encoder_hid_dim": None,
                                     "encoder_hid_dim_type": None,
                                     "attention_head_dim": [2, 2, 4, 4],
                                     "num_attention_heads": None,
                                     "dual_cross_attention": False,
                                     "use_linear_projection": True,
                                     "class_embed_type": None,
                                     "addition_embed_type": None,
                                     "addition_time_embed_dim": None,
                                     "num_class_embeds": None,
                                     "upcast_attention": False,
                                     "resnet_time_scale_shift": "default",
                                     "resnet_skip_time_act": False,
                                     "resnet_out_scale_factor": 1.0,
                                     "time_embedding_type": "positional",
                                     "time_embedding_dim": None,
                                     "time_embedding_act_fn": None,
                                     "timestep_post_act": None,
                                     "time_cond_proj_dim": None,
                                     "conv_in_kernel": 3,
                                     "conv_out_kernel": 3,
                                     "projection_class_embeddings_input_dim": None,
                                     "attention_type": "default",
                                     "class_embeddings_concat": False,
                                     "mid_block_only_cross_attention": None,
                                     "cross_attention_norm": None,
                                     "addition_embed_type_num_heads": 64},
                     "vae_config": {"in_channels": 3,
                                    "out_channels": 3,
                                    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
                                                         "DownEncoderBlock2D", "DownEncoderBlock2D"],
                                    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                                                       "UpDecoderBlock2D"],
                                    "block_out_channels": [16, 16, 32, 32],
                                    "layers_per_block": 1,
                                    "act_fn": "silu",
                                    "latent_channels": 4,
                                    "norm_num_groups": 8,
                                    "sample_size": 128,
                                    "scaling_factor": 0.18215,
                                    "shift_factor": None,
                                    "latents_mean": None,
                                    "latents_std": None,
                                    "force_upcast": True,
                                    "use_quant_conv": True,
                                    "use_post_quant_conv": True,
                                    "mid_block_add_attention": True},
                     "restorer": {"timestep": 249,
                                  "alpha_cumprod": 0.6754320859909058,
                                  "prediction_type": "epsilon",
                                  "clip_sample": False,
                                  "clip_sample_range": 1.0},
                     "enroller": {"timestep": 1, "alpha_cumprod": 0.9982960224151611},
                     "freeu": {"b1": 1.4, "b2": 1.6, "s1": 0.9, "s2": 0.2},
                     "use_adain": True,
                     "train_input": False,
                     "max_references": 4,
                     "prompt": "A high-quality photo of a person; professional, 8k",
                     "shared_layers": [{"name": "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
                                        "tokens": 16,
                                        "channels": 64},
                                       {"name": "up_blocks.1.attentions.1.transformer_blocks.0.attn1",
                                        "tokens": 16,
                                        "channels": 64},
                                       {"name": "up_blocks.1.attentions.2.transformer_blocks.0.attn1",
                                        "tokens": 16,
                                        "channels": 64},
                                       {"name": "up_blocks.2.attentions.0.transformer_blocks.0.attn1",
                                        "tokens": 64,
                                        "channels": 32},
                                       {"name": "up_blocks.2.attentions.1.transformer_blocks.0.attn1",
                                        "tokens": 64,
                                        "channels": 32},
                                       {"name": "up_blocks.2.attentions.2.transformer_blocks.0.attn1",
                                        "tokens": 64,
                                        "channels": 32},
                                       {"name": "up_blocks.3.attentions.0.transformer_blocks.0.attn1",
                                        "tokens": 256,
                                        "channels": 32},
                                       {"name": "up_blocks.3.attentions.1.transformer_blocks.0.attn1",
                                        "tokens": 256,
                                        "channels": 32},
                                       {"name": "up_blocks.3.attentions.2.transformer_blocks.0.attn1",
                                        "tokens": 256,
                                        "channels": 32}],
                     "source": {"random": "tiny", "seed": 0, "created": "2026-12-04T21:02:22+0000"},
                     "bundle_id": "8881d7dfaa510385a24c7ee9ed38b0e054894c2784df0b62463847a3bbea20b8"}
OLD_FORMAT_WEIGHTS_SHA256 = "79ddfd2a8d1d95ad7bf8720aaa02b02ebff0abf4f8bdbafa525182bfecf0c701"
BUNDLE_FIELDS = ("format", "version", "dtype", "crop_size", "latent_size", "vae_scale_factor", "shared_layers")


def test_an_old_format_bundle_still_loads(tmp_path):
    # the bundle id rule is unchanged: the old bundle's id is still its content's
    assert content_id(OLD_FORMAT_CONFIG, OLD_FORMAT_WEIGHTS_SHA256) == OLD_FORMAT_CONFIG["bundle_id"]
    fresh = write_random_bundle("tiny", tmp_path / "fresh", dtype="float32", seed=0)
    old = tmp_path / "old"
    old.mkdir()
    (old / WEIGHTS_NAME).write_bytes((fresh / WEIGHTS_NAME).read_bytes())
    # another torch may draw other random weights than those the literal was written with: hash these
    bundle_id = content_id(OLD_FORMAT_CONFIG, sha256_file(old / WEIGHTS_NAME))
    (old / CONFIG_NAME).write_text(json.dumps({**OLD_FORMAT_CONFIG, "bundle_id": bundle_id}))
    bundle = load_bundle(old)
    assert bundle.model == ModelConfig()
    assert (bundle.crop_size, bundle.latent_size, bundle.latent_channels) == (128, 16, 4)
    # and the exporter still writes these fields with these values
    written = json.loads((fresh / CONFIG_NAME).read_text())
    for field in (*ModelConfig().to_dict(), *BUNDLE_FIELDS):
        assert written[field] == OLD_FORMAT_CONFIG[field], field


def test_an_imported_release_reads_back_its_config(release_factory):
    """The flags of the checkpoint's cfg, the paper's values and the base's schedule (the miniature has
    SD-Turbo's) come back from the bundle as one typed config."""
    for use_adain, train_input in ((True, False), (False, True)):
        bundle = load_bundle(release_factory(use_adain, train_input)["bundle"])
        assert bundle.model == ModelConfig(use_adain=use_adain, train_input=train_input)


def test_export_writes_the_config_it_is_given_and_the_base_schedule(tmp_path):
    model = ModelConfig(prompt="a face", restore_timestep=500, reference_timestep=10,
                        freeu=FreeUFactors(b1=1.1, b2=1.2, s1=0.5, s2=0.6), use_adain=False, train_input=True,
                        reference_slots=3)
    scheduler_config = {**SD_TURBO_SCHEDULER, "prediction_type": "v_prediction", "clip_sample": True,
                        "clip_sample_range": 2.0}
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE)
    out = write_bundle(tmp_path / "b", unet, vae, scheduler_config, model, {"restorer.unet.": {"w": torch.zeros(1)}},
                       torch.zeros(1, 77, 32), "float32", {})
    alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod
    expected = dataclasses.replace(model, restore_alpha_cumprod=float(alphas[500]),
                                   reference_alpha_cumprod=float(alphas[10]), prediction_type="v_prediction",
                                   clip_sample=True, clip_sample_range=2.0)
    assert ModelConfig.from_dict(json.loads((out / CONFIG_NAME).read_text())) == expected
