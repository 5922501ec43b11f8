"""The InstantRestore network: a one-step restorer with shared-image attention, and the enroller that
computes the reference keys and values it attends to.

Both are built from plain diffusers modules (UNet2DConditionModel, AutoencoderKL) holding merged weights.
Shared attention and FreeU are added with an attention processor and forward pre-hooks, so the modules
and their state-dict keys stay exactly diffusers'. Nothing here uses an FFT: the graphs must export to
ONNX and TensorRT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ADAIN_EPS = 1e-5


def shared_layer_names(unet: nn.Module) -> list[str]:
    """The decoder self-attention layers that attend to the references, in module order
    (`up_blocks.{1,2,3}.attentions.*.transformer_blocks.*.attn1`: 9 in SD 2.1)."""
    names = []
    for name, _ in unet.named_modules():
        parts = name.split(".")
        if parts[0] == "up_blocks" and "attentions" in parts and parts[-1] == "attn1":
            names.append(name)
    return names


def up_block_resolution(unet_config, latent_size: int, block: int) -> int:
    """Latent pixels per side in decoder block `block` (block 0 works at the lowest resolution)."""
    return latent_size // 2 ** (len(unet_config["block_out_channels"]) - 1 - block)


# ---------------------------------------------------------------------------------------------- FreeU


def fourier_filter_matrix(height: int, width: int, scale: float) -> torch.Tensor:
    """FreeU's Fourier filter (scale the four lowest frequencies around DC after an fftshift, keep the
    real part) as the real (HW, HW) matrix M with filter(x).flatten() == M @ x.flatten().

    Built once in float64 by filtering the identity basis; the network only multiplies by it."""
    n = height * width
    basis = torch.eye(n, dtype=torch.float64).reshape(n, height, width)
    freq = torch.fft.fftshift(torch.fft.fft2(basis), dim=(-2, -1))
    cy, cx = height // 2, width // 2
    mask = torch.ones(height, width, dtype=torch.float64)
    mask[max(cy - 1, 0) : cy + 1, max(cx - 1, 0) : cx + 1] = scale
    filtered = torch.fft.ifft2(torch.fft.ifftshift(freq * mask, dim=(-2, -1))).real
    return filtered.reshape(n, n).T.contiguous()  # column j is the image of basis vector j


class FreeU(nn.Module):
    """FreeU (b1, b2, s1, s2) on the first two decoder blocks of a UNet, as forward pre-hooks on their
    resnets: the first half of the backbone channels is scaled by b, the skip features are low-pass
    scaled by s through a precomputed filter matrix."""

    def __init__(self, unet: nn.Module, latent_size: int, b1: float, b2: float, s1: float, s2: float):
        super().__init__()
        block_out = list(reversed(unet.config.block_out_channels))
        self._handles = []
        for index, (b, s) in enumerate(((b1, s1), (b2, s2))):
            block = unet.up_blocks[index]
            size = up_block_resolution(unet.config, latent_size, index)
            filt = fourier_filter_matrix(size, size, s).T.to(torch.float32)
            self.register_buffer(f"filter{index}", filt, persistent=False)
            previous_out = block_out[max(index - 1, 0)]
            for j, resnet in enumerate(block.resnets):
                hidden = previous_out if j == 0 else resnet.out_channels
                scale = torch.ones(1, hidden, 1, 1)
                scale[:, : hidden // 2] = b
                self.register_buffer(f"scale{index}_{j}", scale, persistent=False)
                hook = self._make_hook(f"filter{index}", f"scale{index}_{j}", hidden)
                self._handles.append(resnet.register_forward_pre_hook(hook))

    def _make_hook(self, filter_name: str, scale_name: str, hidden: int):
        def hook(module, args):
            x, *rest = args
            backbone, skip = x[:, :hidden], x[:, hidden:]
            backbone = backbone * getattr(self, scale_name).to(backbone.dtype)
            b, c, h, w = skip.shape
            skip = (skip.reshape(b, c, h * w) @ getattr(self, filter_name).to(skip.dtype)).reshape(b, c, h, w)
            return (torch.cat([backbone, skip], dim=1), *rest)

        return hook


# ------------------------------------------------------------------------------------ shared attention


def _attention(attn, query, key, value):
    """Multi-head scaled dot-product attention on (B, T, C) projections, then the output projection."""
    batch = query.shape[0]
    head_dim = query.shape[-1] // attn.heads
    q, k, v = (t.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
    return attn.to_out[1](attn.to_out[0](out))


class SharedAttnProcessor:
    """Self-attention for one shared decoder layer.

    mode "record" (enroller): ordinary self-attention that also keeps its K and V (after projection).
    mode "shared" (restorer): queries from the input; keys and values from the references (`refs`, set
    before each forward), preceded by the input's own when `train_input`; reference values re-normalised
    to the input's value statistics when `use_adain` (the references' own normalisation is precomputed).
    """

    def __init__(self, mode: str, use_adain: bool = False, train_input: bool = False):
        self.mode = mode
        self.use_adain = use_adain
        self.train_input = train_input
        self.refs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.recorded: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if hidden_states.ndim != 3 or encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("shared attention expects plain self-attention on (B, T, C) tokens")
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if self.mode == "record":
            self.recorded += [key, value]
            return _attention(attn, query, key, value)

        ref_k, ref_v = self.refs  # (N, T, C) each; ref_v already normalised when use_adain
        batch, channels = hidden_states.shape[0], ref_k.shape[-1]
        ref_k = ref_k.reshape(1, -1, channels).expand(batch, -1, -1)
        ref_v = ref_v.reshape(1, -1, channels)
        if self.use_adain:
            mean = value.mean(dim=1, keepdim=True)
            std = value.std(dim=1, keepdim=True)
            ref_v = ref_v * (std + ADAIN_EPS) + mean
        else:
            ref_v = ref_v.expand(batch, -1, -1)
        if self.train_input:
            ref_k = torch.cat([key, ref_k], dim=1)
            ref_v = torch.cat([value, ref_v], dim=1)
        return _attention(attn, query, ref_k, ref_v)


def value_statistics(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-reference, per-channel mean and (unbiased) std over tokens of V (N, T, C), in float32."""
    v = values.float()
    return v.mean(dim=1, keepdim=True), v.std(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------ the nets


class _Diffusion(nn.Module):
    """What restorer and enroller share: a VAE encoder to latent means, the noise schedule at one
    timestep, a UNet with FreeU and shared-layer processors, the stored prompt embedding."""

    def __init__(self, unet, vae, prompt_embedding, settings: dict, timestep: int, alpha_cumprod: float, mode):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.register_buffer("prompt_embedding", prompt_embedding, persistent=False)
        self.register_buffer("timestep", torch.tensor(timestep, dtype=torch.int64), persistent=False)
        self.sqrt_alpha = math.sqrt(alpha_cumprod)
        self.sqrt_one_minus_alpha = math.sqrt(1.0 - alpha_cumprod)
        self.scaling_factor = float(vae.config.scaling_factor)
        freeu = settings["freeu"]
        self.freeu = FreeU(unet, settings["latent_size"], freeu["b1"], freeu["b2"], freeu["s1"], freeu["s2"])
        self.layer_names = shared_layer_names(unet)
        self.processors = [
            SharedAttnProcessor(mode, settings["use_adain"], settings["train_input"]) for _ in self.layer_names
        ]
        modules = dict(unet.named_modules())
        for name, processor in zip(self.layer_names, self.processors):
            modules[name].set_processor(processor)

    def noisy_latents(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        moments = self.vae.encoder(images)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        mean = moments[:, : moments.shape[1] // 2]  # the latent distribution's mean, not a sample
        latents = mean * self.scaling_factor
        return self.sqrt_alpha * latents + self.sqrt_one_minus_alpha * noise.to(latents.dtype)

    def run_unet(self, latents: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt_embedding.expand(latents.shape[0], -1, -1)
        return self.unet(latents, self.timestep, encoder_hidden_states=prompt, return_dict=False)[0]


class RestorerNet(_Diffusion):
    """forward(images, noise, k_0, v_0, ..., k_{L-1}, v_{L-1}) -> restored images in [-1, 1]."""

    def __init__(self, unet, vae, prompt_embedding, settings: dict):
        super().__init__(unet, vae, prompt_embedding, settings, settings["timestep"], settings["alpha_cumprod"], "shared")
        self.prediction_type = settings["prediction_type"]
        self.clip_sample_range = settings["clip_sample_range"] if settings["clip_sample"] else None

    def predicted_original(self, sample: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        a, b = self.sqrt_alpha, self.sqrt_one_minus_alpha
        if self.prediction_type == "epsilon":
            x0 = (sample - b * model_output) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * sample - b * model_output
        elif self.prediction_type == "sample":
            x0 = model_output
        else:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        if self.clip_sample_range is not None:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def bind_references(self, layer_inputs) -> None:
        """Hand the shared layers their reference K/V (None to release them)."""
        if layer_inputs is not None and len(layer_inputs) != 2 * len(self.processors):
            raise ValueError(f"expected {2 * len(self.processors)} reference tensors, got {len(layer_inputs)}")
        for i, processor in enumerate(self.processors):
            processor.refs = None if layer_inputs is None else (layer_inputs[2 * i], layer_inputs[2 * i + 1])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scaling_factor, return_dict=False)[0].clamp(-1.0, 1.0)

    def forward(self, images: torch.Tensor, noise: torch.Tensor, *layer_inputs: torch.Tensor) -> torch.Tensor:
        self.bind_references(layer_inputs)
        try:
            noisy = self.noisy_latents(images, noise)
            return self.decode(self.predicted_original(noisy, self.run_unet(noisy)))
        finally:
            self.bind_references(None)


class EnrollerNet(_Diffusion):
    """forward(refs, noise) -> (k_0, v_0, ..., k_{L-1}, v_{L-1}), each (N, T_l, C_l): the frozen UNet's
    self-attention keys and values of the shared layers for each reference at t = 1."""

    def __init__(self, unet, vae, prompt_embedding, settings: dict):
        super().__init__(
            unet, vae, prompt_embedding, settings, settings["ref_timestep"], settings["ref_alpha_cumprod"], "record"
        )

    def forward(self, refs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        try:
            self.run_unet(self.noisy_latents(refs, noise))
            return tuple(t for processor in self.processors for t in processor.recorded)
        finally:
            for processor in self.processors:
                processor.recorded = []


# ------------------------------------------------------------------------------------------ building


def _module_from_weights(cls, config: dict, weights: dict, device, dtype, allowed_missing=()):
    """A diffusers module built on the meta device and filled with `weights` (no random init)."""
    with torch.device("meta"):
        module = cls.from_config(config)
    weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(tuple(allowed_missing))]
    if missing or unexpected:
        raise ValueError(f"{cls.__name__} weights do not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for prefix in allowed_missing:  # parts that are never run are dropped rather than left on meta
        if hasattr(module, prefix):
            setattr(module, prefix, None)
    return module.eval().requires_grad_(False)


def build_net(bundle, graph: str, device="cpu", dtype=torch.float32) -> RestorerNet | EnrollerNet:
    """One network of a bundle ("restorer" or "enroller", the names in graphs.GRAPHS) on `device`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if graph not in ("restorer", "enroller"):
        raise ValueError(f"unknown network {graph!r}; a bundle has a restorer and an enroller")
    config = bundle.config
    prompt = bundle.tensors("prompt_embedding", device).pop("").to(dtype)
    unet = _module_from_weights(UNet2DConditionModel, config["unet_config"], bundle.tensors(f"{graph}.unet."), device, dtype)
    if graph == "restorer":
        vae = _module_from_weights(AutoencoderKL, config["vae_config"], bundle.tensors("restorer.vae."), device, dtype)
        return RestorerNet(unet, vae, prompt, bundle.settings()).to(device)
    vae = _module_from_weights(  # the enroller only encodes
        AutoencoderKL, config["vae_config"], bundle.tensors("enroller.vae."), device, dtype,
        allowed_missing=("decoder", "post_quant_conv"),
    )
    return EnrollerNet(unet, vae, prompt, bundle.settings()).to(device)


def build_nets(bundle, device="cpu", dtype=torch.float32) -> tuple[RestorerNet, EnrollerNet]:
    """The restorer and the enroller of a bundle, on `device` in `dtype`."""
    return build_net(bundle, "restorer", device, dtype), build_net(bundle, "enroller", device, dtype)
