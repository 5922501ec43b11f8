"""The torch backend: the network run eagerly by PyTorch, on any device it supports."""

from __future__ import annotations

import torch

from .network import build_nets


class TorchBackend:
    name = "torch"

    def __init__(self, bundle, device="cpu", dtype=torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.restorer_net, self.enroller_net = build_nets(bundle, self.device, dtype)

    @torch.inference_mode()
    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        return list(self.enroller_net(refs.to(self.device, self.dtype), noise.to(self.device, self.dtype)))

    @torch.inference_mode()
    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.restorer_net(images.to(self.device, self.dtype), noise.to(self.device, self.dtype), *layer_inputs)
