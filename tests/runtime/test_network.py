"""The method's parts in runtime/network.py on their own: the model config (model_config.py), the two attention
processors, both halves of AdaIN, FreeU, the reference padding and the noise rule."""

import dataclasses
import json

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from instantrestore.export.random_bundle import SD_TURBO_SCHEDULER
from instantrestore.runtime.errors import InstantRestoreError
from instantrestore.runtime.model_config import FreeUFactors, ModelConfig, ModelConfigError
from instantrestore.runtime.network import (
    FreeU,
    RecordAttnProcessor,
    SharedAttnProcessor,
    enroll_noise,
    fourier_filter_matrix,
    normalise_references,
    reference_inputs,
    reference_order,
    reference_statistics,
    renormalise_to_input,
    restore_noise,
    seeded_noise,
)

from tests.support.miniature import UNET_CONFIG


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


LATENT = (4, 16, 16)


# ------------------------------------------------------------------------------------------ the config


def test_the_defaults_are_the_papers_and_the_releases():
    config = ModelConfig()
    assert (config.restore_timestep, config.reference_timestep) == (249, 1)
    assert dataclasses.astuple(config.freeu) == (1.4, 1.6, 0.9, 0.2)  # b1, b2, s1, s2
    assert config.prompt == "A high-quality photo of a person; professional, 8k"
    assert config.use_adain is True and config.train_input is False  # the released cfg
    assert config.reference_slots == 4


def test_the_default_schedule_is_sd_turbos():
    scheduler = DDPMScheduler.from_config(SD_TURBO_SCHEDULER)
    config = ModelConfig()
    assert config.restore_alpha_cumprod == float(scheduler.alphas_cumprod[249])
    assert config.reference_alpha_cumprod == float(scheduler.alphas_cumprod[1])
    assert (config.prediction_type, config.clip_sample, config.clip_sample_range) == ("epsilon", False, 1.0)


@pytest.mark.parametrize("config", [
    ModelConfig(),
    ModelConfig(prompt="a face", restore_timestep=500, reference_timestep=3, freeu=FreeUFactors(1.0, 1.1, 0.5, 0.25),
                use_adain=False, train_input=True, reference_slots=2, restore_alpha_cumprod=0.5,
                reference_alpha_cumprod=0.99, prediction_type="v_prediction", clip_sample=True, clip_sample_range=2.5),
])
def test_the_config_round_trips_through_json(config):
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_the_config_json_has_the_bundle_names():
    assert ModelConfig().to_dict() == {
        "restorer": {"timestep": 249, "alpha_cumprod": 0.6754320859909058, "prediction_type": "epsilon",
                     "clip_sample": False, "clip_sample_range": 1.0},
        "enroller": {"timestep": 1, "alpha_cumprod": 0.9982960224151611},
        "freeu": {"b1": 1.4, "b2": 1.6, "s1": 0.9, "s2": 0.2},
        "use_adain": True,
        "train_input": False,
        "max_references": 4,
        "prompt": "A high-quality photo of a person; professional, 8k",
    }


def _without(field):
    def change(data):
        *parents, last = field.split(".")
        for part in parents:
            data = data[part]
        del data[last]
    return change


def _with(field, value):
    def change(data):
        *parents, last = field.split(".")
        for part in parents:
            data = data[part]
        data[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_without("restorer.timestep"), "restorer.timestep is missing"),
    (_without("prompt"), "prompt is missing"),
    (_with("use_adain", 1), "use_adain is 1, it must be true or false"),
    (_with("max_references", 0), "max_references is 0, it must be a whole number from 1 to 8"),
    (_with("enroller.timestep", 1.5), "enroller.timestep is 1.5, it must be a whole number from 0 to 999"),
    (_with("restorer.alpha_cumprod", "0.5"), 'restorer.alpha_cumprod is "0.5", it must be a number in (0, 1]'),
    (_with("restorer.prediction_type", "x0"), 'restorer.prediction_type is "x0", it must be epsilon, v_prediction'),
    (_with("freeu.s2", -1), "freeu.s2 is -1, it must be a number from 0 to 10"),
])
def test_bad_config_values_are_named(change, message):
    data = ModelConfig().to_dict()
    change(data)
    with pytest.raises(ModelConfigError) as caught:
        ModelConfig.from_dict(data)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, InstantRestoreError) and isinstance(caught.value, ValueError)


def test_a_config_made_in_code_is_checked_too():
    with pytest.raises(ModelConfigError, match="max_references is 0"):
        ModelConfig(reference_slots=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().use_adain = False


# ---------------------------------------------------------------------------------------------- attention


def _layer():
    torch.manual_seed(0)
    return Attention(query_dim=8, heads=2, dim_head=4).eval()


def _plain_attention(attn, query_input, kv_input):
    """Ordinary attention written out per head: queries of one input, keys and values of another."""
    q, k, v = attn.to_q(query_input), attn.to_k(kv_input), attn.to_v(kv_input)
    outs = []
    for h in range(attn.heads):
        part = slice(h * 4, (h + 1) * 4)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / 2.0, dim=-1)
        outs.append(weights @ v[..., part])
    return attn.to_out[0](torch.cat(outs, dim=-1))


@torch.no_grad()
def test_record_keeps_the_keys_and_values_and_attends_as_usual():
    attn, x = _layer(), torch.randn(2, 6, 8)
    attn.set_processor(AttnProcessor2_0())
    usual = attn(x)
    record = RecordAttnProcessor()
    attn.set_processor(record)
    out = attn(x)
    assert (out - usual).abs().max().item() < 1e-6
    key, value = record.recorded
    assert torch.equal(key, attn.to_k(x)) and torch.equal(value, attn.to_v(x))


@torch.no_grad()
def test_shared_attends_to_the_recorded_references():
    attn, x, refs = _layer(), torch.randn(1, 6, 8), torch.randn(3, 5, 8)
    record = RecordAttnProcessor()
    attn.set_processor(record)
    attn(refs)
    ref_k, ref_v = record.recorded  # (3, 5, 8) each: three references
    shared = SharedAttnProcessor(use_adain=False, train_input=False)
    shared.refs = (ref_k, ref_v)
    attn.set_processor(shared)
    out = attn(x)
    # queries from the input, keys and values from all references' tokens
    expected = _plain_attention(attn, x, refs.reshape(1, 15, 8))
    assert (out - expected).abs().max().item() < 1e-5
    shared.train_input = True  # the input's own keys and values come first
    expected = _plain_attention(attn, x, torch.cat([x, refs.reshape(1, 15, 8)], dim=1))
    assert (attn(x) - expected).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------------------------ AdaIN


def test_adain_gives_the_references_the_inputs_value_statistics():
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(3, 40, 6, generator=g) * torch.tensor([0.5, 1, 2, 3, 4, 5]) + 7
    inputs = torch.randn(2, 30, 6, generator=g) * torch.tensor([2, 1, 0.1, 3, 1, 9]) - 1
    mean, std = reference_statistics(refs)  # at enrollment
    assert mean.shape == std.shape == (3, 1, 6)
    normalised = normalise_references(refs, mean, std)
    assert normalised.mean(dim=1).abs().max().item() < 1e-5
    out = renormalise_to_input(normalised.reshape(1, -1, 6), inputs)  # every frame
    assert out.shape == (2, 120, 6)
    for b in range(2):
        for r in range(3):
            part = out[b, r * 40:(r + 1) * 40]
            assert torch.allclose(part.mean(dim=0), inputs[b].mean(dim=0), atol=1e-4)
            assert torch.allclose(part.std(dim=0), inputs[b].std(dim=0), rtol=1e-3)  # eps shifts it by ~1e-4


# ----------------------------------------------------------------------------------- references and noise


@pytest.mark.parametrize("count, order", [(1, [0, 0, 0, 0]), (2, [0, 1, 0, 1]), (3, [0, 1, 2, 0]), (4, [0, 1, 2, 3]),
                                          (5, [0, 1, 2, 3, 4])])
def test_fewer_references_than_slots_repeat_in_turn(count, order):
    assert reference_order(count, 4) == order


@pytest.mark.parametrize("use_adain", [True, False])
def test_reference_inputs_pad_each_layer_and_normalise_values_for_adain(use_adain):
    g = torch.Generator().manual_seed(1)
    keys = [torch.randn(3, 5, 4, generator=g), torch.randn(3, 7, 2, generator=g)]
    values = [torch.randn(3, 5, 4, generator=g) * 3 + 1, torch.randn(3, 7, 2, generator=g) - 2]
    stats = [reference_statistics(v) for v in values]
    config = ModelConfig(use_adain=use_adain)
    inputs = reference_inputs(config, keys, values, [m for m, _ in stats], [s for _, s in stats])
    order = [0, 1, 2, 0]
    assert len(inputs) == 4
    for layer, (k, v, (mean, std)) in enumerate(zip(keys, values, stats)):
        assert torch.equal(inputs[2 * layer], k[order])
        expected = normalise_references(v, mean, std) if use_adain else v
        assert torch.equal(inputs[2 * layer + 1], expected[order])


def test_restore_noise_is_one_fixed_tensor_for_every_batch_slot():
    noise = restore_noise(3, LATENT)
    assert noise.shape == (3, *LATENT)
    assert all(torch.equal(noise[i], noise[0]) for i in range(3))
    assert torch.equal(noise[0], seeded_noise((1, *LATENT))[0])
    assert torch.equal(restore_noise(1, LATENT), restore_noise(1, LATENT))  # the same in every frame


def test_enroll_noise_is_one_per_reference():
    noise = enroll_noise(3, LATENT)
    assert noise.shape == (3, *LATENT)
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[1], noise[2])
    assert torch.equal(noise, enroll_noise(3, LATENT))  # fixed by the seed


def test_the_restorer_follows_the_noise_rule(tiny_restorer):
    r = tiny_restorer
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, r.crop_size, r.crop_size, generator=g) * 2 - 1
    profile = r.enroll(image.expand(2, -1, -1, -1))
    # the same crop twice among the references: their own noise makes their keys differ
    assert not torch.equal(profile.keys[0][0], profile.keys[0][1])
    out = r.restore(image.expand(2, -1, -1, -1), profile)
    assert (out[0] - out[1]).abs().max().item() < 1e-5  # the same noise in each batch slot
