"""The user's jobs: enroll selfies into a profile, restore a video file, run the live virtual camera.

Everything here checks what the user gave (names, files, bundle, profile, camera) before any slow
model loading, so mistakes are reported at once and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from . import home, vcam
from .engine import choose_engine, load_engine
from .errors import PluginError
from .progress import ProgressBar, count_text, rate_text, say

RECOMMENDED_SELFIES = 4
MAX_SELFIES = 8  # the exported graphs and engines take 1..8 references
# Below this many pixels a face holds too little detail to stand for the person.
MIN_FACE_PIXELS = 64
# A second face at least this big relative to the main one makes the photo ambiguous.
SECOND_FACE_RATIO = 0.4
# BlazeFace finds "faces" in noise and texture with scores up to about 0.7 (a 512x512 noise image
# scores 0.69): a selfie's face must score at least this, in the whole photo and in its windows alike.
SELFIE_MIN_SCORE = 0.75


# ------------------------------------------------------------------------------------------------
# Enroll


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


def _window_starts(length: int, side: int) -> list:
    if side >= length:
        return [0]
    stride = max(1, side // 2)
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def find_faces(image: np.ndarray, crop_size: int, detector) -> list:
    """Every face of a still photo, aligned like the live crop, largest first.

    The whole photo is searched first. BlazeFace looks at its input at 128x128, so a face that is
    small in a large photo can be missed; only then is the photo searched again in overlapping
    square windows (half and a quarter of its short side), so a good selfie is never refused for
    a false detection in a window.
    """
    from instantrestore.runtime.align import align_face, face_crops
    from instantrestore.runtime.tracking import box_iou, refine_near

    faces = [face for face in face_crops(image, crop_size, detector=detector) if face.score >= SELFIE_MIN_SCORE]
    if faces:
        return faces
    height, width = image.shape[:2]
    found = []
    for fraction in (2, 4):
        side = min(height, width) // fraction
        if side < 128:
            break
        for top in _window_starts(height, side):
            for left in _window_starts(width, side):
                window = np.ascontiguousarray(image[top: top + side, left: left + side])
                for face in detector.detect(window, None):
                    if face.score < SELFIE_MIN_SCORE:
                        continue
                    face.shift(left, top)
                    same = [other for other in found if box_iou(other.box, face.box) > 0.3]
                    if not same:
                        found.append(face)
                    elif face.score > max(other.score for other in same):
                        replaced = {id(other) for other in same}
                        found = [other for other in found if id(other) not in replaced] + [face]
    found = sorted((refine_near(detector, image, face) for face in found), key=lambda face: face.area, reverse=True)
    return [align_face(image, face, crop_size) for face in found]


def selfie_crop(path: Path, image: np.ndarray, crop_size: int, detector, progress=None):
    """The aligned face of one selfie, or PluginError saying what is wrong with the photo. A smaller second face
    (someone in the background) is ignored, and said so through `progress`."""
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
    from instantrestore.runtime.tracking import FaceDetector, TrackingError

    results, images = {}, {}
    for path in paths:
        try:
            images[path] = read_image(path)
        except PluginError as error:
            results[path] = str(error)
    if images:
        with FaceDetector(mode="image", timeout_s=60.0) as detector:
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


def enroll(image_paths, name: str, bundle_arg=None, device: Optional[str] = None, progress=say) -> Path:
    """Detect, align and enroll the selfies; write the profile `name`; returns its path."""
    from instantrestore.runtime.graphs import MAX_REFERENCES

    home.check_profile_name(name)
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise PluginError("give at least one photo of your face")
    limit = min(MAX_SELFIES, MAX_REFERENCES)
    if len(paths) > limit:
        raise PluginError(f"{len(paths)} photos given; use at most {limit} ({RECOMMENDED_SELFIES} is best)")
    seen = {}
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            raise PluginError(f"{path}: given twice (also as {seen[key]})")
        seen[key] = path
    bundle = home.resolve_bundle(bundle_arg)
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
    return path


# ------------------------------------------------------------------------------------------------
# Video file


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


LEFT_ALONE = ("not enrolled", "too small", "identity unsure")  # the pipeline's reasons for not restoring a face


def faces_line(summary: dict) -> str:
    """The end-of-run account of faces, counted once per face and frame: how many were restored, and why the
    others were left as they were."""
    restored = int(summary.get("faces_restored", 0))
    reasons = [f"{int(summary[reason])} {reason}" for reason in LEFT_ALONE if summary.get(reason)]
    line = f"faces: {restored} restored"
    return line + (f"; left as they were: {', '.join(reasons)}" if reasons else "") + " (counted per frame)"


def face_pipeline(profiles: dict, restorers: dict, crop_size: int, blend: float = 1.0, recording: bool = False):
    """The frame pipeline restoring each recognised face with its own profile (profiles: name -> Profile;
    restorers: name -> crop restorer); faces of no one enrolled pass through untouched. A recording also looks
    for faces far from the camera (full-range BlazeFace); live, faces are recognised on a worker thread."""
    from instantrestore.runtime.pipeline import FramePipeline

    return FramePipeline(restorers, crop_size, blend=blend, identities=identities_of(profiles, live=not recording),
                         far=recording)


def identities_of(profiles: dict, live: bool):
    """Who the enrolled people are (profiles: name -> Profile). Live, recognition runs beside the frames; a
    recording waits for it, so its result never depends on timing."""
    from instantrestore.runtime.identity import Identities

    return Identities({name: profile.embeddings for name, profile in profiles.items()}, background=live)


def restore_recording(restorers: dict, profiles: dict, crop_size: int, source, sink, blend: float = 1.0,
                      batch_size: int = 1, progress=None, on_frame=None):
    """One recording through the face pipeline into an open sink (`video`, `batch`, the panel): the sink is
    finished, or aborted on any failure so no partial file is left. Returns the pipeline's stats."""
    from instantrestore.runtime.pipeline import run_file

    try:
        with face_pipeline(profiles, restorers, crop_size, blend, recording=True) as pipeline:
            return run_file(pipeline, source, sink, progress=progress, batch_size=batch_size, on_frame=on_frame)
    except BaseException:
        sink.abort()  # run_file aborts too; this covers a failure before it starts
        raise


def restore_video(in_path, out_path, profile_name, bundle_arg=None, backend: str = "auto",
                  device: Optional[str] = None, batch_size: int = 1, blend: float = 1.0, overwrite: bool = False,
                  progress=say, frame_progress=None, on_frame=None) -> dict:
    """Restore every frame of `in_path` into `out_path` (audio copied), each enrolled person's face with their
    profile (`profile_name`: one name or several); an existing `out_path` is replaced only with `overwrite`.
    Returns a summary dict. frame_progress(done, total) replaces the terminal's progress bar and
    on_frame(raw, restored) sees each frame (the panel); an exception either raises cancels the run, leaving no
    output."""
    from instantrestore.runtime.files import output_target
    from instantrestore.runtime.media import FileSink, FileSource

    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise PluginError(f"{in_path}: file not found")
    if in_path.is_dir():
        raise PluginError(f"{in_path}: is a folder, not a video")
    if _same_file(in_path, out_path):
        raise PluginError(f"the output {out_path} is the input video; choose another output file")
    if out_path.is_dir():
        raise PluginError(f"the output {out_path} is a folder; give a file name such as {out_path / in_path.name}")
    folder = out_path.parent if str(out_path.parent) else Path(".")
    if not folder.is_dir():
        raise PluginError(f"the output folder {folder} does not exist")
    if output_target(out_path).exists() and not overwrite:
        raise PluginError(f"the output {out_path} exists; pass --overwrite to replace it")
    if not (0.0 <= blend <= 1.0):
        raise PluginError(f"--blend must be between 0 and 1, got {blend}")
    if batch_size < 1:
        raise PluginError(f"--batch-size must be at least 1, got {batch_size}")
    bundle = home.resolve_bundle(bundle_arg)
    profiles = home.load_profiles(profile_name, bundle)
    source = FileSource(in_path)
    if out_path.exists():
        progress(f"{out_path} exists; it will be replaced when the new file is complete")
    if source.hdr:
        progress(f"note: {in_path.name} is HDR (PQ/HLG); the restored copy is 8-bit SDR H.264, so its colours look "
                 "flatter than the original's on an HDR screen")

    # The output is opened (as a temp file) before the slow model load, so a bad name fails at once.
    sink = FileSink(out_path, like=source)
    try:
        restorer = load_engine(bundle, backend, device, None, progress)
    except BaseException:
        sink.abort()
        raise
    started = time.monotonic()
    bar = ProgressBar(f"restoring {in_path.name}") if frame_progress is None else None
    try:
        restorers = {name: restorer.crop_restorer(profile) for name, profile in profiles.items()}
        stats = restore_recording(restorers, profiles, restorer.crop_size, source, sink, blend, batch_size,
                                  progress=bar if bar is not None else frame_progress, on_frame=on_frame)
    except BaseException:
        sink.abort()  # covers a failure before the recording starts (the restorers)
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = stats.summary()
    frames = sink.frames_written
    elapsed = time.monotonic() - started
    no_face, not_finite = int(summary.get("no_face", 0)), int(summary.get("not_finite", 0))
    if not_finite:
        progress(f"warning: the model's output was not finite (NaN or infinite) in {not_finite} of {frames} frames; "
                 "they were left as they were. The model bundle or its engines may be damaged: export again")
    progress(f"wrote {out_path}: {count_text(frames, 'frame')} at {rate_text(source.fps)} fps in {elapsed:.1f} s "
             f"({frames / elapsed if elapsed else 0:.2f} frames/s); face restored in {frames - no_face - not_finite} "
             f"of {frames}")
    progress(faces_line(summary))
    return {"frames": frames, "no_face": no_face, "not_finite": not_finite, "seconds": elapsed, "stats": summary}


# ------------------------------------------------------------------------------------------------
# Live camera


def parse_size(text) -> Optional[tuple]:
    if text is None:
        return None
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PluginError(f"--size must look like 1280x720, got {text!r}")
    width, height = int(parts[0]), int(parts[1])
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise PluginError(f"--size {width}x{height} is out of range")
    return width, height


def _is_device_node(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


DEFAULT_CAMERA_SIZE = (1280, 720)  # what call apps send; OpenCV alone would open most webcams at 640x480


def open_input(spec, size: Optional[tuple], fps: Optional[float]):
    """A camera (index or device path; asked for `size`, else 1280x720) or a video file (played at its own
    rate)."""
    from instantrestore.runtime.media import CameraSource, CameraUnavailable, FileSource

    spec = "0" if spec is None else str(spec)
    path = Path(spec)
    if spec.isdigit() or spec.startswith("/dev/") or _is_device_node(path):
        if spec.startswith("/dev/") and not path.exists():
            raise PluginError(f"--input {spec}: no such camera device")
        try:
            return CameraSource(int(spec) if spec.isdigit() else spec, size=size or DEFAULT_CAMERA_SIZE, fps=fps)
        except CameraUnavailable as error:
            raise PluginError(f"{error}; check that it exists and no other app is using it (`instantrestore doctor` "
                              "lists cameras)") from None
    if path.is_file():
        return FileSource(path)
    if path.is_dir():
        raise PluginError(f"--input {spec}: is a folder, not a camera or video file")
    raise PluginError(f"--input {spec}: no such camera index, device or video file")


def _camera_device_path(source) -> Optional[str]:
    device = getattr(source, "device", None)
    if device is None:
        return None
    if isinstance(device, int) and vcam.platform_name() == "linux":
        return f"/dev/video{device}"
    return os.path.realpath(device) if isinstance(device, str) else None


def fit(image: np.ndarray, size: tuple) -> np.ndarray:
    """The frame at the virtual camera's (width, height), never stretched: a frame of another shape is
    cropped around its centre to the output's shape first (a 4:3 camera in a 16:9 output loses strips
    at the top and bottom, as call apps crop), then scaled."""
    width, height = size
    frame_height, frame_width = image.shape[:2]
    if frame_width * height > frame_height * width:  # wider than the output: crop the sides
        keep = int(round(frame_height * width / height))
        left = (frame_width - keep) // 2
        image = image[:, left: left + keep]
    elif frame_width * height < frame_height * width:  # taller: crop the top and bottom
        keep = int(round(frame_width * height / width))
        top = (frame_height - keep) // 2
        image = image[top: top + keep]
    if image.shape[1] == width and image.shape[0] == height:
        return image
    import cv2

    shrinking = image.shape[1] > width
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class Passthrough:
    """Sends the camera's own frames to the virtual camera while the model loads (seconds; minutes
    when TensorRT engines are built), so call apps can already list and select the device: with
    v4l2loopback's exclusive_caps=1 it is only listed while it receives frames."""

    def __init__(self, source, write):
        self.source = source
        self.write = write
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instantrestore-passthrough", daemon=True)

    def _run(self):
        try:
            for item in self.source:
                if self._stop.is_set():
                    return
                self.write(item.image)
                self.sent += 1
        except Exception:  # noqa: BLE001 - the real run reports camera problems itself
            return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5.0)
        return False


class OutputTee:
    """The sinks of a camera run: the virtual camera plus an optional preview window, with frames
    resized to the virtual camera's size and an optional stats overlay and log."""

    def __init__(self, camera_sink, size: tuple, preview=None, stats=None, show_stats: bool = False, log_every_s: float = 2.0):
        self.camera_sink = camera_sink
        self.size = size
        self.preview = preview
        self.stats = stats
        self.show_stats = show_stats
        self.log_every_s = log_every_s
        self._last_log = time.monotonic()

    def write(self, image, timestamp=None):
        image = fit(image, self.size)
        self.camera_sink.write(image, timestamp)
        if self.preview is not None:
            shown = self.stats.draw(image) if (self.show_stats and self.stats is not None) else image
            self.preview.write(shown, timestamp)
            if self.preview.closed_by_user:
                raise PreviewClosed()
        if self.stats is not None and self.show_stats and time.monotonic() - self._last_log >= self.log_every_s:
            say("stats: " + self.stats.format_line())
            self._last_log = time.monotonic()

    def close(self):
        if self.preview is not None:
            self.preview.close()


class PreviewClosed(Exception):
    """The user closed the preview window: stop the camera like Ctrl+C."""


class LiveControl:
    """Another thread's handle on a running `run_camera` (the panel): stop it, change the strength or the profiles
    without a restart, see each shown frame through on_frame(raw, shown, latency_s)."""

    def __init__(self, on_frame=None):
        self.stop = threading.Event()
        self.on_frame = on_frame
        self.camera_name = None  # what call apps list, once the virtual camera is open
        self.pipeline = None  # once the model is loaded
        self.blend = None  # a strength set while the model loads, applied when it is live
        self._engine = self._bundle = None

    def set_blend(self, blend: float) -> None:
        if not (0.0 <= blend <= 1.0):
            raise PluginError(f"--blend must be between 0 and 1, got {blend}")
        self.blend = float(blend)
        if self.pipeline is not None:
            self.pipeline.compositor.blend = float(blend)  # read at every frame's paste

    def set_profile(self, names) -> None:
        """Restore these people (one profile name or several) from the next frames on."""
        if self.pipeline is None:
            raise PluginError("the model is still loading; change the profile when the camera is live")
        profiles = home.load_profiles(names, self._bundle)
        restorers = {name: self._engine.crop_restorer(profile) for name, profile in profiles.items()}
        identities = identities_of(profiles, live=True)
        previous = self.pipeline.identities
        self.pipeline.restore, self.pipeline.identities = restorers, identities  # tracks are recognised anew
        if previous is not None and hasattr(previous, "close"):
            previous.close()


def run_camera(profile_name, input_spec=None, bundle_arg=None, backend: str = "auto", device: Optional[str] = None,
               size_text=None, fps: Optional[float] = None, vcam_backend: Optional[str] = None,
               vcam_device: Optional[str] = None, max_frames: Optional[int] = None, preview: bool = False,
               show_stats: bool = False, blend: float = 1.0, progress=say,
               control: Optional[LiveControl] = None) -> dict:
    """Live restore from a camera or a file into the virtual camera until Ctrl+C, the end of the
    file, `max_frames` captured frames, or control.stop; each enrolled person (`profile_name`: one name or
    several) with their own profile."""
    from instantrestore.runtime.media import (PreviewSink, SteadyCamera, VirtualCameraSink, VirtualCameraUnavailable,
                                              display_problem)
    from instantrestore.runtime.pipeline import run_live

    size = parse_size(size_text)
    if fps is not None and not (1 <= fps <= 240):
        raise PluginError(f"--fps must be between 1 and 240, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise PluginError(f"--max-frames must be at least 1, got {max_frames}")
    if not (0.0 <= blend <= 1.0):
        raise PluginError(f"--blend must be between 0 and 1, got {blend}")
    if preview and (problem := display_problem()):
        raise PluginError(f"--preview: {problem}; run without --preview (the virtual camera needs no display)")
    bundle = home.resolve_bundle(bundle_arg)
    profiles = home.load_profiles(profile_name, bundle)
    choose_engine(bundle, backend, device)  # a backend that cannot run here is said before anything opens

    with contextlib.ExitStack() as stack:
        source = open_input(input_spec, size, fps)
        if source.live:  # a hung or unplugged camera is reopened, not the end of the call's video
            source = SteadyCamera(lambda: open_input(input_spec, size, fps), camera=source, notify=progress)
        if hasattr(source, "close"):
            stack.callback(source.close)
        out_size = size or (source.width, source.height)
        out_fps = float(fps or source.fps or 30)
        if source.live is False:
            progress(f"playing {Path(str(input_spec)).name} at {rate_text(source.fps)} fps as the camera")

        backends = vcam.available_backends()
        if vcam_backend is None and not backends:
            _explain_missing_camera(progress)
            raise PluginError(f"no virtual camera backend on this system; {vcam.missing_camera_summary()}")
        try:
            camera_sink = VirtualCameraSink(out_size[0], out_size[1], out_fps, backend=vcam_backend, device=vcam_device)
        except VirtualCameraUnavailable as error:
            if vcam_backend is not None and vcam_backend not in backends:
                raise PluginError(f"{error}") from None
            _explain_missing_camera(progress)
            raise PluginError(f"{error}; {vcam.missing_camera_summary()}") from None
        stack.callback(camera_sink.close)
        input_device = _camera_device_path(source)
        if input_device is not None and camera_sink.device and input_device == os.path.realpath(str(camera_sink.device)):
            raise PluginError(f"the input {input_device} is the virtual camera itself; pick your real camera with --input")

        shown_as = vcam.camera_name_in_apps(camera_sink.backend, camera_sink.device)
        if control is not None:
            control.camera_name = shown_as
        progress(f"virtual camera: {camera_sink.device} ({camera_sink.backend}) {out_size[0]}x{out_size[1]} at "
                 f"{rate_text(out_fps)} fps; pick \"{shown_as}\" in your call app. Ctrl+C stops.")
        def load_and_warm_up():
            engine = load_engine(bundle, backend, device, None, progress)
            restorers = {name: engine.crop_restorer(profile) for name, profile in profiles.items()}
            # the first restore pays for CUDA-graph capture, autotuning or the first engine run: not on air
            for restore_crops in restorers.values():
                restore_crops(np.zeros((1, engine.crop_size, engine.crop_size, 3), np.uint8))
            return engine, restorers

        if source.live:
            progress("it shows your camera as it is until the model is loaded")
            with Passthrough(source, lambda image: camera_sink.write(fit(image, out_size))):
                restorer, restorers = load_and_warm_up()
        else:
            restorer, restorers = load_and_warm_up()
        pipeline = stack.enter_context(face_pipeline(profiles, restorers, restorer.crop_size, blend))
        if control is not None:
            control._engine, control._bundle, control.pipeline = restorer, bundle, pipeline
            if control.blend is not None:
                pipeline.compositor.blend = control.blend
        preview_sink = PreviewSink() if preview else None
        tee = OutputTee(camera_sink, out_size, preview_sink, pipeline.stats, show_stats=show_stats)
        stack.callback(tee.close)
        stopped_by = "end of input"
        try:
            report = run_live(pipeline, source, tee, max_frames=max_frames, fps=out_fps,
                              halt=control.stop if control else None, on_frame=control.on_frame if control else None)
            if max_frames is not None and report.captured >= max_frames:
                stopped_by = count_text(max_frames, "frame")
            elif control is not None and control.stop.is_set():
                stopped_by = "user"
        except (KeyboardInterrupt, PreviewClosed):
            report = None
            stopped_by = "user"
        summary = pipeline.stats.summary()
        sent = camera_sink.frames_written
        progress(f"stopped ({stopped_by}): {count_text(sent, 'frame')} sent to the virtual camera"
                 + (f", {report.processed} restored, {report.dropped} dropped, {report.repeated} repeated, "
                    f"latency {report.mean_latency_s * 1000:.0f} ms mean" if report is not None else ""))
        progress(faces_line(summary))
        if show_stats:
            progress("stats: " + pipeline.stats.format_line())
        return {"sent": sent, "report": report, "stats": summary}


def _explain_missing_camera(progress) -> None:
    for line in vcam.setup_instructions():
        progress(line)
    note = vcam.environment_note()
    if note:
        progress(note)
