"""The restoration core: the network against an independent implementation of the equations, FreeU as a
matrix, LoRA merging, profiles, and the importer's refusals."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from instantrestore.export import CheckpointError, import_checkpoint, merge_lora
from instantrestore.plugin.cli import main
from instantrestore.runtime import Profile, ProfileError, load_restorer
from instantrestore.runtime.network import FreeU, fourier_filter_matrix
from miniature import CROP_SIZE, UNET_CONFIG, VAE_CONFIG, VAE_LORA_TARGETS, write_release
from reference import ReferenceInstantRestore

LATENT = (4, CROP_SIZE // 8, CROP_SIZE // 8)


def crops(n, seed):
    """Smooth random crops in [-1, 1] (low-frequency, so the VAE sees image-like input)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(small, size=CROP_SIZE, mode="bicubic").clamp(-1, 1)


def noise(n, seed):
    return torch.randn(n, *LATENT, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_adain,train_input", [(True, False), (False, True)])
def test_restorer_matches_independent_reference(release_factory, use_adain, train_input):
    release = release_factory(use_adain, train_input)
    restorer = load_restorer(release["bundle"], backend="torch", device="cpu", dtype=torch.float32)
    images, refs = crops(2, 1), crops(3, 2)  # 3 references: the reference pads them to 4 itself
    ref_noise, image_noise = noise(3, 3), noise(2, 4)

    out = restorer.restore(images, restorer.enroll(refs, noise=ref_noise), noise=image_noise)
    expected = ReferenceInstantRestore(release).restore(images, refs, ref_noise, image_noise)

    assert out.shape == images.shape and out.dtype == torch.float32
    assert (out - expected).abs().max().item() <= 2e-4
    # the references must matter: other selfies give a visibly different result
    other = restorer.restore(images, restorer.enroll(crops(3, 9), noise=ref_noise), noise=image_noise)
    assert (other - out).abs().max().item() > 1e-3


@pytest.mark.parametrize("height,width", [(2, 2), (4, 4), (8, 8), (16, 16), (6, 10), (5, 7)])
def test_freeu_filter_matrix_equals_fft(height, width):
    from diffusers.utils.torch_utils import fourier_filter

    x = torch.randn(2, 3, height, width)
    matrix = fourier_filter_matrix(height, width, 0.2).float()
    ours = (x.reshape(2, 3, -1) @ matrix.T).reshape_as(x)
    assert (ours - fourier_filter(x, threshold=1, scale=0.2)).abs().max().item() < 1e-5


def test_freeu_hooks_equal_diffusers_freeu():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    theirs = UNet2DConditionModel(**UNET_CONFIG).eval()
    ours = UNet2DConditionModel(**UNET_CONFIG).eval()
    ours.load_state_dict(theirs.state_dict())
    theirs.enable_freeu(s1=0.9, s2=0.2, b1=1.4, b2=1.6)
    FreeU(ours, UNET_CONFIG["sample_size"], b1=1.4, b2=1.6, s1=0.9, s2=0.2)
    x, text = torch.randn(2, *LATENT), torch.randn(2, 77, 32)
    with torch.no_grad():
        a = theirs(x, 249, encoder_hidden_states=text).sample
        b = ours(x, 249, encoder_hidden_states=text).sample
    assert (a - b).abs().max().item() < 1e-4
    theirs.disable_freeu()
    with torch.no_grad():
        without = theirs(x, 249, encoder_hidden_states=text).sample
    assert (without - b).abs().max().item() > 1e-3  # FreeU changes the output: the hooks are live


def test_merged_lora_equals_unmerged():
    from diffusers import AutoencoderKL
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    wrapped = inject_adapter_in_model(
        LoraConfig(r=8, lora_alpha=4, target_modules=VAE_LORA_TARGETS), AutoencoderKL(**VAE_CONFIG), adapter_name="vae_skip"
    ).eval()
    for name, p in wrapped.named_parameters():
        if "lora_" in name:
            p.data = torch.randn_like(p) * 0.05
    merged_weights, count = merge_lora(wrapped.state_dict(), "vae_skip")
    assert count > 20 and not any("lora" in k or "base_layer" in k for k in merged_weights)
    plain = AutoencoderKL(**VAE_CONFIG).eval()
    plain.load_state_dict(merged_weights, strict=True)
    x = crops(1, 5)
    with torch.no_grad():
        a = wrapped.decode(wrapped.encode(x).latent_dist.mean).sample
        b = plain.decode(plain.encode(x).latent_dist.mean).sample
    assert (a - b).abs().max().item() < 1e-4


def test_cached_profile_equals_enrolling_in_the_call(tiny_restorer, tmp_path):
    r = tiny_restorer
    images, refs = crops(1, 11), crops(4, 12)
    profile = r.enroll(refs)
    path = profile.save(tmp_path / "me.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    loaded = Profile.load(path, bundle_id=r.bundle.bundle_id)
    assert loaded.count == 4 and tuple(loaded.thumbnails.shape) == (4, 128, 128, 3)
    cached = r.restore(images, loaded)
    assert torch.equal(cached, r.restore(images, profile))
    assert torch.equal(cached, r.restore(images, refs))  # the authors' structure: enroll inside the call
    assert torch.equal(cached, r.restore(images, loaded))  # deterministic, bit for bit


@pytest.mark.parametrize("count", [1, 2, 3])
def test_fewer_references_are_repeated_to_four(tiny_restorer, count):
    r = tiny_restorer
    images, refs, ref_noise, image_noise = crops(1, 21), crops(count, 22), noise(count, 23), noise(1, 24)
    order = [i % count for i in range(4)]
    padded = r.restore(images, r.enroll(refs, noise=ref_noise), noise=image_noise)
    explicit = r.restore(images, r.enroll(refs[order], noise=ref_noise[order]), noise=image_noise)
    assert (padded - explicit).abs().max().item() < 1e-5


def test_profile_for_another_bundle_is_refused(tiny_restorer, tmp_path):
    r = tiny_restorer
    profile = r.enroll(crops(1, 31))
    profile.bundle_id = "0" * 64
    path = profile.save(tmp_path / "foreign.safetensors")
    with pytest.raises(ProfileError, match="another model bundle"):
        Profile.load(path, bundle_id=r.bundle.bundle_id)
    with pytest.raises(ProfileError, match="another model bundle"):
        r.restore(crops(1, 32), Profile.load(path))


def test_bad_shapes_get_clear_errors(tiny_restorer):
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\)"):
        tiny_restorer.restore(torch.zeros(1, 3, 64, 64), crops(1, 1))
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny_restorer.enroll(crops(2, 1), noise=torch.zeros(1, *LATENT))


def test_bundle_holds_merged_weights_only(tiny_release, tmp_path):
    out = import_checkpoint(tiny_release["checkpoint"], base=tiny_release["base"], vae=tiny_release["vae"],
                            out=tmp_path / "fp16")
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float16" and config["crop_size"] == CROP_SIZE
    assert config["use_adain"] is True and config["train_input"] is False
    assert len(config["shared_layers"]) == 9
    with safe_open(str(out / "weights.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}
    assert not any("lora" in k or "base_layer" in k or "text_encoder" in k for k in keys)
    assert not any(k.startswith("enroller.vae.decoder") for k in keys)
    assert sorted(os.listdir(out)) == ["config.json", "weights.safetensors"]
    # the fp16 bundle restores like the fp32 one, to fp16 precision
    images, refs = crops(1, 41), crops(2, 42)
    half = load_restorer(out)
    full = load_restorer(tiny_release["bundle"])
    diff = (half.restore(images, half.enroll(refs)) - full.restore(images, full.enroll(refs))).abs().max().item()
    assert diff < 5e-2


def test_module_prefixed_checkpoint_gives_the_same_bundle(tiny_release, tmp_path):
    release = write_release(tmp_path, module_prefix=True)
    out = import_checkpoint(release["checkpoint"], base=release["base"], vae=release["vae"], out=tmp_path / "b",
                            dtype="float32")
    ours = json.loads((out / "config.json").read_text())["bundle_id"]
    assert ours == json.loads((tiny_release["bundle"] / "config.json").read_text())["bundle_id"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tiny_release, tmp_path):
    evil = _RunsCode()
    evil.marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "cfg": evil}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        import_checkpoint(tmp_path / "evil.pt", base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "out")
    assert not evil.marker.exists() and not (tmp_path / "out").exists()


def test_files_that_are_not_checkpoints_are_refused(tiny_release, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_checkpoint(junk, base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "out")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an InstantRestore checkpoint"):
        import_checkpoint(tmp_path / "other.pt", base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "o")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_export_command(tiny_release, tmp_path, capsys):
    args = ["export", "--checkpoint", str(tiny_release["checkpoint"]), "--base", str(tiny_release["base"]),
            "--vae", str(tiny_release["vae"]), "--out", str(tmp_path / "bundle")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "merging LoRA" in err and "written to" in err
    assert (tmp_path / "bundle" / "config.json").is_file()
    bad = args[:1] + ["--checkpoint", str(tmp_path / "missing.pt")] + args[3:]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"instantrestore: error: checkpoint {tmp_path / 'missing.pt'} does not exist"


def test_auto_backend_says_what_it_picked(tiny_bundle, capsys):
    r = load_restorer(tiny_bundle, backend="auto")
    assert r.backend.name in ("torch", "onnxruntime") and r.device.type == "cpu"  # no GPU here
    assert f"backend auto -> {r.backend.name} on cpu" in capsys.readouterr().err
    assert r.restore(crops(1, 51), crops(1, 52)).shape == (1, 3, CROP_SIZE, CROP_SIZE)


def test_damaged_profile_is_a_clear_error(tiny_restorer, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "damaged.safetensors"
    save_file({"thumbnails": torch.zeros(1, 4, 4, 3, dtype=torch.uint8)}, str(path),
              metadata={"format": "instantrestore-profile", "bundle_id": "x", "layers": "9"})
    with pytest.raises(ProfileError, match="damaged profile"):
        Profile.load(path)
