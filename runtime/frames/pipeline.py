"""FramePipeline: the steps on one frame or a batch of consecutive frames (check, track, align, restore, composite),
which the runners (file_run, live_run) spread over their threads; face_pipeline builds one from enrolled profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ..align import alignment_matrix, warp_to_crop
from ..composite import Compositor
from ..restored import RestoredCrops
from ..tracking import Tracker
from .smoothing import LookAhead
from .stats import PipelineStats
from .work import LocatedFace, PipelineError, restorer_batch

# Faces smaller than this (the larger side of the detector's box, in frame pixels) are left as they are: too few
# pixels to recognise reliably or to restore into a 512-pixel crop (README "Small and several faces").
MIN_FACE_PIXELS = 40


@dataclass(frozen=True)
class PipelineOptions:
    """How a FramePipeline pastes and what it makes for itself. blend: 0..1 strength of the restored face.
    color_match: match the restored crop's colour to the original crop. stats: where the timings and counts
    go (default: a new PipelineStats). far: the tracker the pipeline makes (when given none) also finds faces
    far from the camera (full-range BlazeFace, for recordings)."""

    blend: float = 1.0
    color_match: bool = True
    stats: Optional[PipelineStats] = None
    far: bool = False


class FramePipeline:
    """Restores the faces in each frame.

    restore: a callable taking a (B, S, S, 3) uint8 RGB batch of aligned crops and returning the restored
        batch, same shape and dtype, or RestoredCrops (e.g. restorer.crop_restorer(profile)); with
        `identities`, a mapping from each enrolled name to such a callable. It must not write into the batch it
        is given: that is the faces' crops (slices of their batch's buffer), which compositing reads again.
    identities: an identity.Identities. With it, every face recognised as an enrolled person is restored with
        that person's profile and every other face passes through untouched. Without it, the tracker's main
        face is restored (no recognition: for callers that have no enrolled photos).
    crop_size: S, from the model bundle. tracker: a tracking.Tracker (default: vendored BlazeFace short-range;
        with options.far, full-range too). options: a PipelineOptions. Frames without a face are returned as
        they are (the same array).
    """

    def __init__(
        self,
        restore,
        crop_size: int,
        tracker: Optional[Tracker] = None,
        identities=None,
        options: PipelineOptions = PipelineOptions(),
    ):
        if identities is None and not callable(restore):
            raise PipelineError("restore must be a callable taking a (B, S, S, 3) uint8 batch")
        if identities is not None:
            restore = dict(restore) if isinstance(restore, Mapping) else {}
            missing = [name for name in identities.gallery if not callable(restore.get(name))]
            if missing:
                raise PipelineError(f"no restorer for the enrolled {', '.join(map(repr, missing))}")
        self.restore = restore
        self.identities = identities
        self.crop_size = int(crop_size)
        if self.crop_size < 8:
            raise PipelineError(f"crop size must be at least 8, got {crop_size}")
        self._owns_tracker = tracker is None
        self.tracker = tracker if tracker is not None else Tracker(far=options.far)
        self.compositor = Compositor(blend=options.blend, color_match=options.color_match)
        self.stats = options.stats if options.stats is not None else PipelineStats()

    def check_frame(self, frame) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise PipelineError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        return frame

    def _restore_batch(self, name, crops: np.ndarray) -> RestoredCrops:
        with self.stats.time("restore", frames=len(crops)):
            restored = (self.restore if self.identities is None else self.restore[name])(crops)
        finite = np.ones(len(crops), bool)
        if isinstance(restored, RestoredCrops):
            restored, finite = restored.crops, np.asarray(restored.finite, bool)
        restored = np.asarray(restored)
        if restored.shape != crops.shape or restored.dtype != np.uint8 or finite.shape != (len(crops),):
            raise PipelineError(
                f"restorer returned {restored.dtype} {restored.shape}, expected uint8 {crops.shape}"
            )
        return RestoredCrops(restored, finite)

    def observe(self, frame, timestamp) -> list:
        """Track and recognise one frame: [(track, name)] of the faces to restore (held ones too, missed > 0);
        counts the others by reason."""
        with self.stats.time("track"):
            if self.identities is None:
                track = self.tracker.update(frame, timestamp)
                return [] if track is None else [(track, None)]
            tracks = self.tracker.update_all(frame, timestamp)
            small = [t for t in tracks if max(t.box[2] - t.box[0], t.box[3] - t.box[1]) < MIN_FACE_PIXELS]
            if small:
                self.stats.count("too small", len(small))
                tracks = [t for t in tracks if t not in small]
            chosen = []
            for track, verdict in zip(tracks, self.identities.assign(frame, tracks)):
                if verdict.name is None:
                    self.stats.count(verdict.reason)
                else:
                    chosen.append((track, verdict.name))
            return chosen

    def align(self, frames, faces) -> list:
        """[[LocatedFace, ...] per frame] for each frame's [(keypoints, name, strength), ...].

        Every crop is warped straight into its slot of one new (N, S, S, 3) buffer, each profile's faces in
        consecutive slots, so the restorer is handed slices of it instead of a stacked copy. A new buffer for each
        call, never a reused one: a run keeps several batches in flight (one in each stage and more waiting between
        them) and compositing reads each face's crop again (colour match) after the restore."""
        for frame_faces in faces:
            if not frame_faces:
                self.stats.count("no_face")
        listed = [(index, *face) for index, frame_faces in enumerate(faces) for face in frame_faces]
        located = [[] for _ in frames]
        if listed:
            names = list(dict.fromkeys(name for _, _, name, _ in listed))
            by_name = sorted(range(len(listed)), key=lambda i: names.index(listed[i][2]))  # stable: frame order
            slots = np.argsort(by_name)  # listed[i]'s slot
            crops = np.empty((len(listed), self.crop_size, self.crop_size, 3), np.uint8)
            with self.stats.time("align", frames=sum(1 for frame_faces in faces if frame_faces)):
                for (index, keypoints, name, strength), slot in zip(listed, slots.tolist()):
                    matrix = alignment_matrix(keypoints, self.crop_size)
                    warp_to_crop(frames[index], matrix, self.crop_size, out=crops[slot])
                    located[index].append(LocatedFace(matrix, crops, slot, name, strength))
        return located

    def look_ahead(self, batch_size: int = 1) -> LookAhead:
        """File mode's tracking, which places each frame's faces knowing the frames after it, and aligns them
        batch_size frames at a time."""
        return LookAhead(self, batch_size=batch_size)

    def process(self, frame, timestamp: Optional[float] = None) -> np.ndarray:
        """Restore the faces in one RGB uint8 frame; timestamp (s) drives the keypoint smoothing."""
        return self.process_batch([frame], [timestamp])[0]

    def process_batch(self, frames, timestamps=None) -> list:
        """Like process() for several consecutive frames, with one restorer call per profile for all faces."""
        frames, located = self.locate_batch(frames, timestamps)
        return self.composite_batch(frames, located, self.restore_located(located))

    # The three steps of process_batch, which the runners run on their threads.

    def locate_batch(self, frames, timestamps=None) -> tuple[list, list]:
        """Check, track and align consecutive frames: (frames, [[LocatedFace, ...] per frame])."""
        frames = [self.check_frame(frame) for frame in frames]
        if timestamps is None:
            timestamps = [None] * len(frames)
        if len(timestamps) != len(frames):
            raise PipelineError(f"{len(frames)} frames but {len(timestamps)} timestamps")
        fade = 1.0 / (self.tracker.max_missed + 1)  # a held face fades out over the frames it is held
        faces = [[(track.keypoints, name, 1.0 - track.missed * fade) for track, name in self.observe(frame, stamp)]
                 for frame, stamp in zip(frames, timestamps)]
        return frames, self.align(frames, faces)

    def restore_located(self, located) -> Optional[RestoredCrops]:
        """The restored crops of every located face, in order (one restorer call per profile); None when no frame
        has a face to restore."""
        faces = [face for frame_faces in located for face in frame_faces]
        if not faces:
            return None
        size = self.crop_size
        crops, finite = np.empty((len(faces), size, size, 3), np.uint8), np.ones(len(faces), bool)
        for name in dict.fromkeys(face.name for face in faces):
            positions = [i for i, face in enumerate(faces) if face.name == name]
            restored = self._restore_batch(name, restorer_batch([faces[i] for i in positions]))
            crops[positions], finite[positions] = restored.crops, restored.finite
        return RestoredCrops(crops, finite)

    def composite_batch(self, frames, located, restored: Optional[RestoredCrops], in_place: bool = False) -> list:
        """Each frame with its restored faces pasted back; frames without a face, or whose restored faces are not
        finite, are returned as they are. in_place: paste into the frames themselves (the runners, which own the
        frames they decoded or captured) instead of into copies."""
        outputs, slot = list(frames), 0
        for index, frame_faces in enumerate(located):
            pastes = []
            for face in frame_faces:
                if restored.finite[slot]:
                    pastes.append((restored.crops[slot], face.matrix, face.crop, face.strength))
                    self.stats.count("faces_restored")
                else:
                    self.stats.count("not_finite")
                slot += 1
            if pastes:
                with self.stats.time("composite"):
                    outputs[index] = self.compositor.many(frames[index], pastes,
                                                          out=frames[index] if in_place else None)
        return outputs

    def close(self):
        if self.identities is not None:
            self.identities.close()
        if self._owns_tracker:
            self.tracker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def identities_of(profiles: dict, live: bool):
    """Who the enrolled people are (profiles: name -> Profile). Live, recognition runs beside the frames; a
    recording waits for it, so its result never depends on timing."""
    from ..identity import Identities

    return Identities({name: profile.embeddings for name, profile in profiles.items()}, background=live)


def face_pipeline(profiles: dict, restorers: dict, crop_size: int, blend: float = 1.0,
                  recording: bool = False) -> FramePipeline:
    """The frame pipeline restoring each recognised face with its own profile (profiles: name -> Profile;
    restorers: name -> crop restorer); faces of no one enrolled pass through untouched. A recording also looks
    for faces far from the camera (full-range BlazeFace); live, faces are recognised on a worker thread."""
    return FramePipeline(restorers, crop_size, identities=identities_of(profiles, live=not recording),
                         options=PipelineOptions(blend=blend, far=recording))
