"""Options several commands share (`camera`, `video`, `batch`, ...): one wording of each, one check."""

from __future__ import annotations

import argparse

from instantrestore.runtime.backends import CHOICES

from .errors import PluginError


def check_blend(blend: float, error=None) -> float:
    """The restored face's strength, 0..1: the one check of --blend (camera, video, batch, the panel's slider).
    `error`: the PluginError subclass the caller reports its bad options with."""
    if not 0.0 <= blend <= 1.0:
        raise (error or PluginError)(f"--blend must be between 0 and 1, got {blend}")
    return float(blend)


def add_profile_option(parser) -> None:
    """--profile, once per person to restore (camera, video, batch)."""
    parser.add_argument("--profile", required=True, action="append",
                        help="the profile made by `enroll`; give it once per person to restore (each face is restored "
                             "only when recognised as one of them)")


def add_model_options(parser, backend: bool = True) -> None:
    """--bundle, --backend (unless backend=False) and --device."""
    parser.add_argument("--bundle", help="model bundle folder (default: the last exported)")
    if backend:
        parser.add_argument("--backend", choices=CHOICES,
                            help="inference backend (default auto: TensorRT, then onnxruntime/torch on CUDA, then CPU)")
    parser.add_argument("--device", type=device_name, help="cuda, cuda:1 or cpu (default: cuda when available)")


def device_name(text: str) -> str:
    """A torch device name, checked while parsing so a typo is a usage error, not a crash later."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cuda, cuda:N or cpu") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return text
