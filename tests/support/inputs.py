"""Random crops and latent noise for the miniature restorer."""

import torch

from tests.support.miniature import CROP_SIZE


LATENT = (4, CROP_SIZE // 8, CROP_SIZE // 8)


def crops(n, seed):
    """Smooth random crops in [-1, 1] (low-frequency, so the VAE sees image-like input)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(small, size=CROP_SIZE, mode="bicubic").clamp(-1, 1)
