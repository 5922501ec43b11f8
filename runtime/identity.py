"""Whose face: dlib's ResNet face descriptor, and the per-track decision of who a tracked face is.

The recogniser is dlib's `dlib_face_recognition_resnet_model_v1` (CC0 weights from the
`face_recognition_models` package, run by the `dlib-bin` wheels): a 128-number descriptor per face, whose
Euclidean distance is small for one person and large for two. It is aligned by dlib's own 5-point shape
predictor (also CC0) inside the BlazeFace box. README "Whose face" gives the measured distances.

Recognition runs per track, never per frame: when a track starts, again every RECHECK_FRAMES frames and
whenever the track jumps. A track is restored once it is settled: at once on a clear match (CLEAR_DISTANCE),
else when CONFIRMATIONS recognitions in a row agree on one enrolled person; until then its identity is unsure
and it passes through untouched.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import importlib.util
import threading
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .errors import InstantRestoreError

# Descriptor distance below which two faces are taken for one person, from distances measured on degraded
# crops (downscale, blur, noise, JPEG) of real photos (README "Whose face"): the nearest impostor was 0.613,
# the farthest genuine pair 0.648. Restoring someone with another's profile is far worse than leaving a face
# untouched, so the threshold sits below every impostor; dlib's own figure for clean photos is 0.6.
MATCH_DISTANCE = 0.55
# A face is only given to the nearest profile when the next profile is clearly farther (never guess between two).
MARGIN = 0.05
# A match this close settles a track at once (every degraded genuine photo of the two colour portraits was
# within 0.47; the nearest impostor 0.613); a looser one must be confirmed by the next recognition.
CLEAR_DISTANCE = 0.45
RECHECK_FRAMES = 15  # re-recognise a settled track this often (a person can be replaced behind a held box)
CONFIRMATIONS = 2  # recognitions in a row that must agree before a track is restored
JUMP = 0.5  # a raw keypoint move of this many face sizes in one frame counts as a jump: recognise again

STRANGER, UNSURE = "not enrolled", "identity unsure"


class RecognizerError(InstantRestoreError, RuntimeError):
    """The face recogniser cannot run (its packages or weights are missing)."""


def model_folder() -> Path:
    """face_recognition_models' weights folder, found without importing the package (its __init__ needs
    pkg_resources, which current setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" if spec else None
    if folder is None or not (folder / "dlib_face_recognition_resnet_model_v1.dat").is_file():
        raise RecognizerError("face recognition needs the face_recognition_models package; reinstall instantrestore")
    return folder


class FaceRecognizer:
    """128-d identity descriptors of faces given by their boxes in an RGB uint8 image. Thread-safe."""

    CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's own alignment for this network

    def __init__(self):
        try:
            import dlib
        except ImportError as error:
            raise RecognizerError(f"face recognition needs dlib-bin ({error}); reinstall instantrestore") from None
        models = model_folder()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._lock = threading.Lock()

    def embed(self, image, boxes: Sequence) -> np.ndarray:
        """(len(boxes), 128) float32 descriptors; boxes are (x0, y0, x1, y1) frame pixels."""
        if not len(boxes):
            return np.zeros((0, 128), np.float32)
        image = np.ascontiguousarray(image, dtype=np.uint8)
        chips = []
        with self._lock:
            for x0, y0, x1, y1 in boxes:
                rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
                shape = self._shape(image, rect)
                chips.append(self._dlib.get_face_chip(image, shape, size=self.CHIP_SIZE, padding=self.CHIP_PADDING))
            descriptors = self._net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(d) for d in descriptors], np.float32)


# Where BlazeFace's box lies in an aligned crop (align.FACE_TEMPLATE), as fractions of its side: how
# profiles made before recognition are described from their aligned thumbnails.
CROP_BOX = (0.21, 0.31, 0.77, 0.89)


def crop_descriptors(crops, recognizer: Optional[FaceRecognizer] = None) -> np.ndarray:
    """(N, 128) descriptors of aligned face crops (N, S, S, 3) uint8."""
    recognizer = recognizer if recognizer is not None else shared_recognizer()
    crops = np.asarray(crops, np.uint8)
    box = [c * crops.shape[1] for c in CROP_BOX]
    return np.concatenate([recognizer.embed(crop, [box]) for crop in crops])


_shared: Optional[FaceRecognizer] = None
_shared_lock = threading.Lock()


def shared_recognizer() -> FaceRecognizer:
    """One recogniser per process (its weights take ~30 MB and a second to load)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceRecognizer()
        return _shared


def distances(descriptor, gallery: Mapping[str, np.ndarray]) -> dict:
    """Distance from one descriptor to each enrolled person: to the nearest of their photos."""
    descriptor = np.asarray(descriptor, np.float32)
    return {name: float(np.linalg.norm(np.asarray(refs, np.float32) - descriptor, axis=1).min())
            for name, refs in gallery.items()}


def pairwise_distances(descriptors) -> np.ndarray:
    """(N, N) distances between N descriptors: do these photos show one person?"""
    descriptors = np.asarray(descriptors, np.float32)
    return np.linalg.norm(descriptors[:, None] - descriptors[None], axis=2)


def match(descriptor, gallery: Mapping[str, np.ndarray], threshold: float = MATCH_DISTANCE) -> tuple:
    """(the enrolled name this descriptor belongs to, or None: no one close enough, or two too alike; its
    distance)."""
    ranked = sorted(distances(descriptor, gallery).items(), key=lambda item: item[1])
    if not ranked:
        return None, float("inf")
    name, distance = ranked[0]
    if distance >= threshold or (len(ranked) > 1 and ranked[1][1] - distance < MARGIN):
        return None, distance
    return name, distance


@dataclasses.dataclass
class Verdict:
    """Who a track is for this frame: `name` when it is to be restored with that profile, else None and why."""

    name: Optional[str]
    reason: str = ""


@dataclasses.dataclass
class _TrackState:
    votes: collections.deque
    last_check: int
    last_keypoints: np.ndarray  # where the face was on the last frame it was seen
    name: Optional[str] = None
    settled: bool = False
    pending: bool = False  # a recognition is under way


class Identities:
    """Decides, per track, which enrolled person it is. gallery: profile name -> (N, 128) descriptors.

    background: recognise on a worker thread (the live camera: a descriptor takes tens of milliseconds on a CPU,
    which must not hold up the frames); a track stays unsure until its recognition is back. Without it (files),
    each frame's recognitions are done before its verdicts, so results do not depend on timing.
    """

    def __init__(self, gallery: Mapping[str, np.ndarray], recognizer: Optional[FaceRecognizer] = None,
                 threshold: float = MATCH_DISTANCE, background: bool = False):
        if not gallery:
            raise ValueError("give at least one enrolled person")
        self.gallery = {name: np.asarray(refs, np.float32) for name, refs in gallery.items()}
        self.recognizer = recognizer if recognizer is not None else shared_recognizer()
        self.threshold = float(threshold)
        self._states: dict[int, _TrackState] = {}
        self._frame = 0
        self._pool = (concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="instantrestore-identity")
                      if background else None)
        self._jobs: list = []

    def _due(self, state: Optional[_TrackState], track) -> bool:
        if track.missed or (state is not None and state.pending):  # nothing new to look at, or being looked at
            return False
        if state is None or not state.settled:
            return True
        size = max(track.box[2] - track.box[0], track.box[3] - track.box[1], 1.0)
        if np.abs(track.raw_keypoints - state.last_keypoints).max() > JUMP * size:
            state.votes.clear()  # jumped: whoever it is now must be recognised before it is restored again
            state.settled, state.name = False, None
            return True
        return self._frame - state.last_check >= RECHECK_FRAMES

    def _recognise(self, frame, boxes, track_ids):
        return track_ids, self.recognizer.embed(frame, boxes)

    def _record(self, track_ids, descriptors) -> None:
        for track_id, descriptor in zip(track_ids, descriptors):
            state = self._states.get(track_id)
            if state is None:  # the track ended meanwhile
                continue
            name, distance = match(descriptor, self.gallery, self.threshold)
            state.votes.append(name)
            state.pending, state.last_check = False, self._frame
            agreed = len(state.votes) == CONFIRMATIONS and len(set(state.votes)) == 1
            clear = name is not None and distance < CLEAR_DISTANCE and set(state.votes) == {name}
            state.settled = agreed or clear
            state.name = name if state.settled else None

    def assign(self, frame, tracks) -> list:
        """A Verdict for each track of this frame, in order."""
        self._frame += 1
        self._states = {t.track_id: self._states[t.track_id] for t in tracks if t.track_id in self._states}
        for job in [job for job in self._jobs if job.done()]:
            self._jobs.remove(job)
            self._record(*job.result())
        due = [t for t in tracks if self._due(self._states.get(t.track_id), t)]
        if due:
            for track in due:
                state = self._states.setdefault(
                    track.track_id, _TrackState(collections.deque(maxlen=CONFIRMATIONS), 0, track.raw_keypoints))
                state.pending = True
            work = ([t.box for t in due], [t.track_id for t in due])
            if self._pool is None:
                self._record(*self._recognise(frame, *work))
            else:
                self._jobs.append(self._pool.submit(self._recognise, np.array(frame, copy=True), *work))
        verdicts = []
        for track in tracks:
            state = self._states.get(track.track_id)
            if state is not None and not track.missed:
                state.last_keypoints = track.raw_keypoints  # a jump is measured from one frame to the next
            if state is None or not state.settled:
                verdicts.append(Verdict(None, UNSURE))
            elif state.name is None:
                verdicts.append(Verdict(None, STRANGER))
            else:
                verdicts.append(Verdict(state.name))
        return verdicts

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
