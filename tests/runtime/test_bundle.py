"""Bundles: an old-format bundle still loads; a damaged one is one clear line naming the file."""

import hashlib
import json
import os
import shutil
import struct

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from instantrestore.export.random_bundle import write_random_bundle
from instantrestore.plugin.cli import main
from instantrestore.runtime import bundle as bundle_module
from instantrestore.runtime import files, load_bundle
from instantrestore.runtime.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleError, content_id
from instantrestore.runtime.files import sha256_file
from instantrestore.runtime.model_config import ModelConfig

from tests.support.damage import data_offset, patch_bytes


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


# ------------------------------------------------------------------------------------------ damaged bundles


def exporters_bundle_id(config, weights) -> str:
    """The id export/bundle_writer.py writes: the config without its source notes and id, then the weights' hash."""
    identity = {k: v for k, v in config.items() if k not in ("source", "bundle_id")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(files.sha256_file(weights).encode())
    return digest.hexdigest()


def rewrite_config(bundle, change, rehash=True):
    """Apply `change` to the bundle's config; with rehash, write the bundle id the exporter would, so only
    the schema can tell."""
    path = bundle / CONFIG_NAME
    config = json.loads(path.read_text())
    change(config)
    if rehash:
        config["bundle_id"] = exporters_bundle_id(config, bundle / WEIGHTS_NAME)
    path.write_text(json.dumps(config))


def rewrite_weights(bundle, change):
    """Apply `change` to the weights dict and write the file back with a matching bundle id."""
    weights = bundle / WEIGHTS_NAME
    tensors = load_file(str(weights))
    change(tensors)
    save_file(tensors, str(weights))
    rewrite_config(bundle, lambda config: None)


def first_unet_weight(bundle):
    with safe_open(str(bundle / WEIGHTS_NAME), "pt") as f:
        return next(k for k in f.keys() if k.startswith("restorer.unet.") and k.endswith(".weight"))


def one_nan(bundle):
    name = first_unet_weight(bundle)
    patch_bytes(bundle / WEIGHTS_NAME, data_offset(bundle / WEIGHTS_NAME, name), struct.pack("<f", float("nan")))


def flipped_bit(bundle):
    offset = data_offset(bundle / WEIGHTS_NAME, first_unet_weight(bundle)) + 2
    data = open(bundle / WEIGHTS_NAME, "rb").read()
    patch_bytes(bundle / WEIGHTS_NAME, offset, bytes([data[offset] ^ 0x10]))


def truncated(bundle):
    weights = bundle / WEIGHTS_NAME
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 1000)


def huge_header(bundle):
    patch_bytes(bundle / WEIGHTS_NAME, 0, struct.pack("<Q", 2**50))


def garbled_header(bundle):
    patch_bytes(bundle / WEIGHTS_NAME, 9, b"}}}}")


def wrong_shape(bundle):
    name = first_unet_weight(bundle)
    rewrite_weights(bundle, lambda t: t.__setitem__(name, t[name].reshape(-1)[:-1].clone()))


def missing_network(bundle):
    rewrite_weights(bundle, lambda t: [t.pop(k) for k in list(t) if k.startswith("enroller.vae.")])


def config_edited_after_export(bundle):
    rewrite_config(bundle, lambda c: c.__setitem__("use_adain", not c["use_adain"]), rehash=False)


def setting(field, value):
    def change(bundle):
        def apply(config):
            *parents, last = field.split(".")
            target = config
            for part in parents:
                target = target[part]
            if value is KeyError:
                del target[last]
            else:
                target[last] = value
        rewrite_config(bundle, apply)
    change.__name__ = f"{field}={value!r}"
    return change


DAMAGE = [
    (flipped_bit, ["changed or damaged after export"]),
    (one_nan, ["changed or damaged after export"]),
    (config_edited_after_export, ["changed or damaged after export"]),
    (truncated, [WEIGHTS_NAME, "not a readable weights file"]),
    (huge_header, [WEIGHTS_NAME, "header too large"]),
    (garbled_header, [WEIGHTS_NAME, "not a readable weights file"]),
    (wrong_shape, [WEIGHTS_NAME, "has shape", "the config's architecture needs"]),
    (missing_network, [WEIGHTS_NAME, "no enroller.vae weights"]),
    (setting("shared_layers", []), [CONFIG_NAME, "shared_layers", "non-empty"]),
    (setting("crop_size", 0), [CONFIG_NAME, "crop_size is 0"]),
    (setting("crop_size", 127), [CONFIG_NAME, "crop_size 127 is not latent_size"]),
    (setting("crop_size", 1_000_000), [CONFIG_NAME, "crop_size is 1000000"]),
    (setting("max_references", 0), [CONFIG_NAME, "max_references is 0"]),
    (setting("dtype", "int8"), [CONFIG_NAME, 'dtype is "int8"']),
    (setting("restorer.timestep", KeyError), [CONFIG_NAME, "restorer.timestep is missing"]),
    (setting("restorer.alpha_cumprod", "0.5"), [CONFIG_NAME, "restorer.alpha_cumprod"]),
    (setting("use_adain", 1), [CONFIG_NAME, "use_adain is 1"]),
    (setting("vae_config.latent_channels", 10**9), [CONFIG_NAME, "latent_channels"]),
]


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("damage, fragments", DAMAGE, ids=[d.__name__ for d, _ in DAMAGE])
def test_a_damaged_bundle_is_one_clear_line_naming_the_file(tiny_bundle, tmp_path, fresh_home, capsys, damage,
                                                             fragments):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    load_bundle(bundle)  # sound before the damage
    damage(bundle)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle)
    assert str(bundle) in str(caught.value) and "export" in str(caught.value)
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"not read: the bundle is checked first")
    code = main(["video", str(clip), "-o", str(tmp_path / "out.mp4"), "--profile", "me", "--bundle", str(bundle)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("instantrestore: error: ") and "export" in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "out.mp4").exists()


def test_a_sound_bundle_loads_and_its_check_is_remembered(tiny_bundle, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    monkeypatch.setattr(files, "HASH_RACY_NS", -1)
    assert load_bundle(bundle).bundle_id == json.loads((tiny_bundle / CONFIG_NAME).read_text())["bundle_id"]
    monkeypatch.setattr(files, "sha256_file", lambda path: pytest.fail("hashed the weights again"))
    monkeypatch.setattr(bundle_module, "_architecture_shapes", lambda *a: pytest.fail("checked the shapes again"))
    load_bundle(bundle)
    config = json.loads((bundle / CONFIG_NAME).read_text())
    (bundle / CONFIG_NAME).write_text(json.dumps({**config, "use_adain": not config["use_adain"]}))
    with pytest.raises(BundleError, match="changed or damaged after export"):  # the config is checked every time
        load_bundle(bundle)
