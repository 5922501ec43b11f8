"""An independent, plain implementation of the InstantRestore equations for the tests: the release's
nets loaded as they were trained (peft adapters unmerged), diffusers' own FreeU (FFT), DDPMScheduler's
add_noise, and shared attention written out per head from the equations. It shares no code with the
package."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.miniature import UNET_LORA_TARGETS, VAE_LORA_TARGETS

PROMPT = "A high-quality photo of a person; professional, 8k"


class EquationAttention:
    """attn1 of a shared layer. record: keep K, V and attend normally. shared: Q from the input, K/V from
    the references (after the input's own with train_input), AdaIN on reference values."""

    def __init__(self, owner, index):
        self.owner, self.index = owner, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        owner = self.owner
        if owner.mode == "record":
            owner.recorded.append((k, v))
        else:
            ref_k, ref_v = owner.refs[self.index]  # lists over references of (1, T, C)
            if owner.use_adain:
                mu_in = v.mean(dim=1, keepdim=True)
                sd_in = v.std(dim=1, keepdim=True)
                ref_v = [(r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + 1e-5) * (sd_in + 1e-5) + mu_in
                         for r in ref_v]
            else:
                ref_v = [r.expand(v.shape[0], -1, -1) for r in ref_v]
            ref_k = [r.expand(k.shape[0], -1, -1) for r in ref_k]
            k_all = torch.cat(([k] if owner.train_input else []) + ref_k, dim=1)
            v_all = torch.cat(([v] if owner.train_input else []) + ref_v, dim=1)
            k, v = k_all, v_all
        heads = attn.heads
        d = q.shape[-1] // heads
        outs = []
        for h in range(heads):
            qh, kh, vh = q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d], v[..., h * d:(h + 1) * d]
            weights = torch.softmax(qh @ kh.transpose(1, 2) / d ** 0.5, dim=-1)
            outs.append(weights @ vh)
        return attn.to_out[0](torch.cat(outs, dim=-1))


class ReferenceInstantRestore:
    def __init__(self, release: dict):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import CLIPTextModel, CLIPTokenizer

        blob = torch.load(release["checkpoint"], map_location="cpu", weights_only=True)
        cfg = blob["cfg"]["model"]
        # a cfg without the flags means the defaults of the authors' ModelConfig
        self.use_adain, self.train_input = cfg.get("use_adain", False), cfg.get("train_input", True)
        nets = {}
        for key, value in blob["state_dict"].items():
            key = key.removeprefix("net.module.").removeprefix("net.")
            net, _, name = key.partition(".")
            nets.setdefault(net, {})[name] = value
        base, vae_dir = Path(release["base"]), Path(release["vae"])

        def lora_rank(weights):
            return next(v.shape[0] for k, v in weights.items() if ".lora_A." in k)

        self.unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        r = lora_rank(nets["unet"])
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=r // 2, target_modules=UNET_LORA_TARGETS), self.unet)
        self.unet.load_state_dict(nets["unet"], strict=True)
        self.vae = AutoencoderKL.from_config(AutoencoderKL.load_config(vae_dir))
        r = lora_rank(nets["vae"])
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=r // 2, target_modules=VAE_LORA_TARGETS), self.vae,
                                adapter_name="vae_skip")
        self.vae.load_state_dict(nets["vae"], strict=True)
        self.original_unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        self.original_unet.load_state_dict(nets["original_unet"], strict=True)
        self.original_vae = AutoencoderKL.from_config(AutoencoderKL.load_config(vae_dir))
        self.original_vae.load_state_dict(nets["original_vae"], strict=True)
        text = CLIPTextModel.from_pretrained(base / "text_encoder")
        # the release stores transformers 4.x's names (under text_model.); transformers 5 has no such level
        weights = {k.replace("text_model.", "", 1): v for k, v in nets["text_encoder"].items()}
        if hasattr(text, "text_model"):
            weights = {"text_model." + k: v for k, v in weights.items()}
        missing, unexpected = text.load_state_dict(weights, strict=False)
        assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
        tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
        ids = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            self.prompt = text(ids)[0]
        self.scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        self.scheduler.set_timesteps(1)
        for net in (self.unet, self.vae, self.original_unet, self.original_vae):
            net.eval().requires_grad_(False)
        for unet in (self.unet, self.original_unet):
            unet.enable_freeu(s1=0.9, s2=0.2, b1=1.4, b2=1.6)
            layers = [n for n, _ in unet.named_modules() if n.startswith("up_blocks.") and n.endswith("attn1")]
            modules = dict(unet.named_modules())
            for i, name in enumerate(layers):
                modules[name].set_processor(EquationAttention(self, i))
        self.mode, self.recorded, self.refs = None, [], None

    @torch.no_grad()
    def reference_kv(self, refs, noise):
        """Per layer, per reference (K, V) of the frozen UNet at t = 1; padded to 4 by repetition."""
        sf = self.original_vae.config.scaling_factor
        z = self.original_vae.encode(refs).latent_dist.mean * sf
        x = self.scheduler.add_noise(z, noise, torch.tensor([1]))
        self.mode, self.recorded = "record", []
        self.original_unet(x, 1, encoder_hidden_states=self.prompt.expand(len(refs), -1, -1))
        n = len(refs)
        order = [i % n for i in range(max(4, n))]
        return [([k[i:i + 1] for i in order], [v[i:i + 1] for i in order]) for k, v in self.recorded]

    @torch.no_grad()
    def restore(self, images, refs, ref_noise, noise):
        self.refs = self.reference_kv(refs, ref_noise)
        sf = self.vae.config.scaling_factor
        t = 249
        z = self.vae.encode(images).latent_dist.mean * sf
        x_t = self.scheduler.add_noise(z, noise, torch.tensor([t]))
        self.mode = "shared"
        eps = self.unet(x_t, t, encoder_hidden_states=self.prompt.expand(len(images), -1, -1)).sample
        a = self.scheduler.alphas_cumprod[t]
        z0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        if self.scheduler.config.clip_sample:
            z0 = z0.clamp(-self.scheduler.config.clip_sample_range, self.scheduler.config.clip_sample_range)
        return self.vae.decode(z0 / sf).sample.clamp(-1, 1)
