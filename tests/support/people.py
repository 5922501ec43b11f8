"""Real photos of three different people, offline from PyPI wheels, and the degradations our inputs suffer.

astronaut: skimage's portrait of Eileen Collins. hopper: matplotlib's sample photo of Grace Hopper.
cameraman: skimage's `camera()` (a man behind a camera on a tripod, greyscale). No other photo of a person
ships with the installed packages (skimage's lfw_subset faces are 25x25 pixels, below any usable size).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
from skimage import data


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def cameraman() -> np.ndarray:
    return np.ascontiguousarray(np.repeat(data.camera()[:, :, None], 3, axis=2))


PEOPLE = {"astronaut": astronaut, "hopper": hopper, "cameraman": cameraman}


def degrade(image, scale=1.0, blur=0.0, noise=0.0, jpeg=None, seed=0) -> np.ndarray:
    """The photo as a call or a recording delivers it: downscaled (and back up: the face keeps few pixels),
    blurred, with sensor noise, JPEG-compressed."""
    height, width = image.shape[:2]
    out = image
    if scale != 1.0:
        small = cv2.resize(out, (max(8, int(width * scale)), max(8, int(height * scale))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    if noise:
        rng = np.random.default_rng(seed)
        out = np.clip(out.astype(np.float32) + rng.normal(0, noise, out.shape), 0, 255).astype(np.uint8)
    if jpeg is not None:
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
        out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(out)


# Each degradation alone and a few together; scale 0.25 leaves the astronaut's face about 25 pixels wide.
DEGRADATIONS = [
    {}, {"scale": 0.5}, {"scale": 0.35}, {"scale": 0.25}, {"blur": 1.5}, {"blur": 3.0}, {"noise": 10}, {"noise": 25},
    {"jpeg": 30}, {"jpeg": 10}, {"scale": 0.35, "blur": 1.0, "noise": 8, "jpeg": 40},
    {"scale": 0.5, "blur": 2.0, "noise": 15, "jpeg": 20},
]
# Other pictures of the same person: mirrored, darker, brighter (what a second selfie or other light gives).
VIEWS = {"plain": lambda im: im, "mirrored": lambda im: np.ascontiguousarray(im[:, ::-1]),
         "dark": lambda im: np.ascontiguousarray((im * 0.55).astype(np.uint8)),
         "bright": lambda im: np.ascontiguousarray(np.clip(im * 1.0 + 50, 0, 255).astype(np.uint8))}
