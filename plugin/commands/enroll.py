"""`instantrestore enroll`: selfies in, an identity profile out. Every photo is checked (readable, one face, big
enough, all of one person) before the model loads, so mistakes are reported at once and leave nothing behind."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .. import home
from ..arguments import add_model_options
from ..engine import load_engine
from ..errors import PluginError
from ..progress import TERMINAL, Progress, count_text
from . import Outcome

RECOMMENDED_SELFIES = 4
MAX_SELFIES = 8  # the exported graphs and engines take 1..8 references
# Below this many pixels a face holds too little detail to stand for the person.
MIN_FACE_PIXELS = 64
# A second face at least this big relative to the main one makes the photo ambiguous.
SECOND_FACE_RATIO = 0.4


NAME = "enroll"
SUMMARY = "create your identity profile from a few selfies (4 recommended)"
DESCRIPTION = ("Make your identity profile from 1 to 8 selfies (4 is best): each photo is checked for one clear, large "
               "enough face, then the reference network runs once and the profile is saved under --name.")
EXAMPLES = ("instantrestore enroll me1.jpg me2.jpg me3.jpg me4.jpg --name me",)


@dataclasses.dataclass
class Options:
    """What `enroll` was asked: the photos (1 to 8, each once), the profile's name, the model bundle (None: the
    default one) and the device the references are encoded on (None: cuda when available)."""

    images: list
    name: str
    bundle: Optional[str] = None
    device: Optional[str] = None

    def __post_init__(self):
        from instantrestore.runtime.graphs import MAX_REFERENCES

        self.name = home.check_profile_name(self.name)
        self.images = [Path(p) for p in self.images]
        if not self.images:
            raise PluginError("give at least one photo of your face")
        limit = min(MAX_SELFIES, MAX_REFERENCES)
        if len(self.images) > limit:
            raise PluginError(f"{len(self.images)} photos given; use at most {limit} ({RECOMMENDED_SELFIES} is best)")
        seen = {}
        for path in self.images:
            key = os.path.realpath(path)
            if key in seen:
                raise PluginError(f"{path}: given twice (also as {seen[key]})")
            seen[key] = path


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMG", help="photos of your face, one person per photo")
    parser.add_argument("--name", required=True, help="profile name, used as --profile NAME later")
    add_model_options(parser, backend=False)


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 image, upright as the camera held it (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise PluginError(f"{path}: file not found")
    if path.is_dir():
        raise PluginError(f"{path}: is a folder, not a photo")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16-bit grey: Pillow's convert("RGB") would clip it to white
                grey = np.round(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
            return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    except UnidentifiedImageError:
        raise PluginError(f"{path}: not a readable image (use JPEG, PNG, WebP, BMP or TIFF; convert HEIC photos to JPEG)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise PluginError(f"{path}: cannot read the image ({' '.join(str(error).split())})") from None


def selfie_crop(path: Path, image: np.ndarray, crop_size: int, detector, progress=None):
    """The aligned face of one selfie, or PluginError saying what is wrong with the photo. A smaller second face
    (someone in the background) is ignored, and said so through `progress`."""
    from instantrestore.runtime.align import find_faces

    height, width = image.shape[:2]
    if min(height, width) < MIN_FACE_PIXELS:
        raise PluginError(f"{path}: the photo is only {width}x{height} pixels; a face needs {MIN_FACE_PIXELS}+ pixels")
    faces = find_faces(image, crop_size, detector)
    if not faces:
        raise PluginError(f"{path}: no face found; use a photo where your face is clearly visible and facing the camera")
    main = faces[0]
    others = [face for face in faces[1:] if face.face_size >= SECOND_FACE_RATIO * main.face_size]
    if others:
        raise PluginError(f"{path}: {1 + len(others)} faces found; use a photo of you alone")
    if len(faces) > 1 and progress is not None:
        progress(f"{path.name}: {count_text(len(faces) - 1, 'smaller face')} ignored (only the largest face, "
                 f"{main.face_size:.0f} pixels, is enrolled)")
    if main.face_size < MIN_FACE_PIXELS:
        raise PluginError(
            f"{path}: the face is too small ({main.face_size:.0f} pixels, need {MIN_FACE_PIXELS}+); use a closer or "
            "higher-resolution photo"
        )
    return main


class Selfie(NamedTuple):
    image: np.ndarray  # the photo as RGB
    face: object  # its aligned face (align.FaceCrop)


def check_selfies(paths, crop_size: int, progress=None) -> dict:
    """{path: its Selfie, or the one-line reason it is refused}, in order. Every photo is checked, so one run
    lists all the problems (`enroll`, and the panel's photo by photo view)."""
    from instantrestore.runtime.tracking import TrackingError, make_detector

    results, images = {}, {}
    for path in paths:
        try:
            images[path] = read_image(path)
        except PluginError as error:
            results[path] = str(error)
    if images:
        with make_detector("image", timeout_s=60.0) as detector:
            for path, image in images.items():
                try:
                    results[path] = Selfie(image, selfie_crop(path, image, crop_size, detector, progress))
                except PluginError as error:
                    results[path] = str(error)
                except TrackingError as error:  # the detector refused this photo; the others are still checked
                    results[path] = f"{path}: {error}"
    return {path: results[path] for path in paths}


def one_person(paths, images, faces) -> np.ndarray:
    """The identity descriptors of the selfies' faces (N, 128), or PluginError naming the photo of someone else."""
    from instantrestore.runtime.identity import MATCH_DISTANCE, RecognizerError, pairwise_distances, shared_recognizer

    try:
        recognizer = shared_recognizer()
    except RecognizerError as error:
        raise PluginError(str(error)) from None
    embeddings = np.concatenate([recognizer.embed(image, [face.box]) for image, face in zip(images, faces)])
    if len(paths) < 2:
        return embeddings
    far = pairwise_distances(embeddings) >= MATCH_DISTANCE
    # a photo is the odd one when it is far from most of the others
    odd = [path for path, row in zip(paths, far) if row.sum() * 2 > len(paths) - 1]
    if len(paths) == 2 and odd:
        raise PluginError(f"{paths[0]} and {paths[1]} show two different people; enroll photos of one person")
    if odd:
        named = ", ".join(map(str, odd))
        raise PluginError(f"{named}: not the same person as the other photos; enroll photos of one person only")
    return embeddings


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """Detect, align and enroll the selfies; write the profile `options.name`. The Outcome's line and value: its
    path."""
    name, device, paths = options.name, options.device, options.images
    bundle = home.resolve_bundle(options.bundle)
    home.check_writable(home.profiles_dir())

    found = check_selfies(paths, bundle.crop_size, progress)
    problems = [result for result in found.values() if isinstance(result, str)]
    if problems:
        raise PluginError("; ".join(problems))
    faces = [found[path].face for path in paths]
    for path, face in zip(paths, faces):
        progress(f"{path.name}: face of {face.face_size:.0f} pixels (detector score {face.score:.2f})")
        if face.face_size < bundle.crop_size / 4:
            progress(f"{path.name}: the face is small for the model's {bundle.crop_size}-pixel crop; a closer photo "
                     "keeps more detail")

    embeddings = one_person(paths, [found[path].image for path in paths], faces)

    restorer = load_engine(bundle, "torch", device, None, progress)
    progress(f"enrolling {len(paths)} photo{'s' if len(paths) != 1 else ''} as {name!r}")
    profile = restorer.enroll_crops(np.stack([face.crop for face in faces]))
    profile.embeddings = embeddings
    profile.metadata.update({
        "name": name,
        "sources": [path.name for path in paths],
        "face_sizes": [round(float(face.face_size), 1) for face in faces],
        "bundle_path": str(bundle.path),
    })
    path = home.profile_path(name)
    replaced = path.exists()
    profile.save(path)
    if replaced:
        progress(f"replaced the existing profile {name!r}")
    if len(paths) < RECOMMENDED_SELFIES:
        progress(f"tip: {RECOMMENDED_SELFIES} selfies (different angles, expressions and light) keep your identity "
                 f"best; you gave {len(paths)}. Enroll again with more to improve it.")
    progress(f"profile {name!r} saved to {path}")
    return Outcome([str(path)], value=path)
