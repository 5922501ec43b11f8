"""The restorer every caller uses: one API over the backends (torch, onnxruntime, tensorrt)."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .backends import backend_class, select
from .bundle import DTYPES, load_bundle
from .network import enroll_noise, reference_inputs, reference_statistics, restore_noise
from .restored import RestoredCrops
from .profile import Profile, ProfileError, ReferenceKV

THUMBNAIL_SIZE = 128
# Written across every face a random-weight bundle restores, so no output of it passes for the real model's
DEMO_MARK = "DEMO MODEL"
DEMO_MARK_WIDTH = 0.28  # of the crop: inside the middle third, where the paste keeps 85% or more of it


class Restorer:
    """enroll(refs) -> Profile; restore(images, profile) -> restored images. Images are (B, 3, S, S)
    float tensors in [-1, 1], aligned face crops, S = `crop_size`."""

    def __init__(self, bundle, backend):
        self.bundle = bundle
        self.backend = backend
        self.crop_size = bundle.crop_size
        self.latent_shape = (bundle.latent_channels, bundle.latent_size, bundle.latent_size)
        self._bound: dict[int, tuple[Profile, list[torch.Tensor]]] = {}  # by id(profile): several people in turn
        self._default_noise: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def _check_images(self, images, what: str) -> torch.Tensor:
        s = self.crop_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{what} must be a (N, 3, {s}, {s}) tensor of aligned crops, got {shape}")
        if images.shape[0] == 0:
            raise ValueError(f"{what} is empty")
        if not images.is_floating_point():
            raise ValueError(f"{what} must be floating point in [-1, 1], got {images.dtype}")
        return images

    def _noise(self, noise, count: int, rule) -> torch.Tensor:
        """`noise` checked, or when None the network's noise `rule` (restore_noise, enroll_noise) for `count`
        items, kept on the backend's device so frames cost no host-to-device copy for it."""
        shape = (count, *self.latent_shape)
        if noise is None:
            key = (count, rule)
            if key not in self._default_noise:
                self._default_noise[key] = rule(count, self.latent_shape).to(self.device, self.backend.dtype)
            return self._default_noise[key]
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        return noise

    def enroll(self, refs: torch.Tensor, noise: torch.Tensor | None = None) -> Profile:
        """The profile of 1 or more aligned reference crops (fewer than the bundle's 4 are repeated in turn
        when restoring)."""
        refs = self._check_images(refs, "refs")
        kv = self.backend.enroll(refs, self._noise(noise, refs.shape[0], enroll_noise))
        keys, values = kv[0::2], kv[1::2]
        stats = [reference_statistics(v) for v in values]
        thumbs = F.interpolate(refs.detach().float().cpu(), size=min(self.crop_size, THUMBNAIL_SIZE), mode="area")
        thumbs = ((thumbs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        enrolled = ReferenceKV(keys, values, [m for m, _ in stats], [s for _, s in stats])
        return Profile(self.bundle.bundle_id, enrolled, thumbs)

    def enroll_crops(self, crops: np.ndarray) -> Profile:
        """enroll() for uint8 RGB crops (N, S, S, 3), as align.face_crops makes them."""
        refs = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.inference_mode():
            return self.enroll(refs.to(self.device))

    def layer_inputs(self, profile: Profile) -> list[torch.Tensor]:
        """The profile as the network's reference inputs, prepared once and reused while it stays bound."""
        bound = self._bound.get(id(profile))
        if bound is None or bound[0] is not profile:
            if profile.bundle_id != self.bundle.bundle_id:
                raise ProfileError("this profile was enrolled with another model bundle; enroll again with this one")
            inputs = [t.to(device=self.device, dtype=self.backend.dtype) for t in reference_inputs(
                self.bundle.model, profile.keys, profile.values, profile.value_means, profile.value_stds)]
            if len(self._bound) >= 8:  # profiles no longer in use are not kept on the device forever
                self._bound.clear()
            bound = self._bound[id(profile)] = (profile, inputs)
        return bound[1]

    def restore(self, images: torch.Tensor, profile, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Restored crops, same shape, dtype and device as `images`. `profile` is a Profile, or a tensor of
        reference crops to enroll inside the call (the authors' per-image structure)."""
        images = self._check_images(images, "images")
        if isinstance(profile, torch.Tensor):
            profile = self.enroll(profile)
        noise = self._noise(noise, images.shape[0], restore_noise)
        out = self.backend.restore(images, noise, self.layer_inputs(profile))
        return out.to(device=images.device, dtype=images.dtype)

    def crop_restorer(self, profile: Profile):
        """A callable for the frame pipeline: uint8 RGB crops (B, S, S, 3) -> RestoredCrops (the restored
        uint8 crops and which came out finite).
        Pixels travel as uint8 (a quarter of float32's bytes); on CUDA through pinned staging buffers."""
        pinned = self.device.type == "cuda"
        staging: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

        def restore_crops(crops: np.ndarray) -> np.ndarray:
            crops = np.ascontiguousarray(crops, dtype=np.uint8)
            host = torch.from_numpy(crops)
            if pinned:
                if crops.shape not in staging:
                    staging[crops.shape] = (torch.empty(crops.shape, dtype=torch.uint8).pin_memory(),
                                            torch.empty(crops.shape, dtype=torch.uint8).pin_memory())
                host, host_out = staging[crops.shape]
                host.copy_(torch.from_numpy(crops))
            # NHWC uint8 permuted to NCHW is a channels-last view, the layout the CUDA fast path runs in
            x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.backend.dtype) / 127.5 - 1.0
            y = self.restore(x, profile)
            finite = torch.isfinite(y).flatten(1).all(1)  # NaN would become a flat grey face in uint8
            y = ((y.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            if not pinned:
                out = y.cpu().numpy()
            else:
                host_out.copy_(y, non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()
                out = host_out.numpy().copy()
            if self.bundle.random_weights:
                out = mark_demo(out)
            return RestoredCrops(out, finite.cpu().numpy())

        return restore_crops


def mark_demo(crops: np.ndarray) -> np.ndarray:
    """The crops (B, S, S, 3) uint8 with DEMO_MARK across the middle of the face: white letters on a black plate,
    one word a line, where the paste keeps 85% or more of the crop (composite's face mask: its middle third)."""
    crops = np.ascontiguousarray(crops)
    size = crops.shape[1]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(size / 128))
    words = DEMO_MARK.split()
    widest = max(cv2.getTextSize(word, font, 1.0, thickness)[0][0] for word in words)
    width = int(DEMO_MARK_WIDTH * size)
    scale = DEMO_MARK_WIDTH * size / widest
    height = cv2.getTextSize(words[0], font, scale, thickness)[0][1]
    top, step, pad = int(size * 0.45), int(height * 1.7), max(2, size // 64)
    plate = ((size - width) // 2 - pad, top - pad, (size + width) // 2 + pad,
             top + step * (len(words) - 1) + height + 2 * pad)
    origins = [((size - cv2.getTextSize(word, font, scale, thickness)[0][0]) // 2, top + line * step + height)
               for line, word in enumerate(words)]
    for crop in crops:
        cv2.rectangle(crop, plate[:2], plate[2:], (0, 0, 0), thickness=-1)
        for word, origin in zip(words, origins):
            cv2.putText(crop, word, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return crops


def load_restorer(bundle_dir, backend: str = "torch", device=None, dtype=None, engines=None,
                  **options) -> Restorer:
    """A Restorer for a model bundle folder on `backend` ("auto" or a name in backends.BACKENDS), `device`
    ("cuda", "cuda:1", "cpu"; None: cuda when available) in `dtype` ("float16", torch.float16, ...; None:
    float16 on CUDA, float32 elsewhere); `engines` is the folder of exported ONNX graphs and TensorRT engines
    (the command line's is `<state>/engines`); `options` go to the backend (torch: cuda_graph, compile).
    backend="auto" chooses backend, device and dtype with backends.select (TensorRT only where its engines
    exist: nothing is built here) and says which on stderr."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    bundle = load_bundle(bundle_dir)
    choice = select(bundle, backend, device, dtype, engines)
    if backend == "auto":
        print(f"instantrestore: backend auto -> {choice.backend} on {choice.device} ({choice.reason or 'ready'})",
              file=sys.stderr)
    return Restorer(bundle, backend_class(choice.backend).load(bundle, choice.device, choice.dtype, engines, **options))
