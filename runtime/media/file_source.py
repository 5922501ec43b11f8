"""Frames of a video file, decoded with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from .base import MediaError, SourceFrame, one_line
from .probe import AVCOL_RANGE_JPEG, COLOR_TAGS, HDR_TRANSFERS, check_video_file, frame_rgb
from .registry import register_source
from .remux import duration_tag, scan_tracks


class FileSource:
    """Frames of a video file, decoded with PyAV. Iterating again decodes from the start again.

    Attributes: path, width, height (as displayed), fps (Fraction), frame_count (as declared by the
    container, else as counted), duration (s), time_base, start_pts, audio_stream_count,
    rotation (degrees counter-clockwise, from the display matrix phones write), hdr (PQ or HLG transfer),
    color_tags (the first frame's colour matrix, primaries and transfer, for an output of the same meaning).
    Frames come out upright, as a player shows them, so an output written from them plays upright with no
    rotation tag; they are 8-bit RGB, so HDR comes out as SDR.
    A truncated or unreadable file raises MediaError.
    """

    live = False
    device = None

    def __init__(self, path):
        import av

        self.path = Path(path)
        check_video_file(self.path)
        try:
            declared_video_s, declared_s = self._read_header()
            self.tracks = scan_tracks(self.path, 1 / float(self.fps))
            # Matroska declares no frame count: the scan counted the frames (a packet each)
            self.frame_count = self.declared_frames or self.tracks[self.video_index].packets or self.frame_count
        except MediaError:
            raise
        except (av.FFmpegError, OSError, ValueError) as error:
            raise MediaError(f"cannot read video {self.path.name}: {one_line(error)}") from error
        if self.width <= 0 or self.height <= 0:
            raise MediaError(f"{self.path.name}: video stream has no frame size")
        self._refuse_if_cut_off(declared_video_s, declared_s)

    def _read_header(self) -> tuple:
        """Reads the container's description and the first frame; (the video track's declared duration, the
        file's), in seconds or None."""
        import av

        with av.open(str(self.path), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{self.path.name}: no video stream")
            stream = container.streams.video[0]
            self._read_stream(stream, container.duration / av.time_base if container.duration else 0.0)
            self.audio_stream_count = len(container.streams.audio)
            declared_video_s = (float(stream.duration * stream.time_base) if stream.duration
                                else duration_tag(stream.metadata))
            declared_s = container.duration / av.time_base if container.duration else None
            first = next(container.decode(stream), None)
            if first is None:  # said now, not after the model has loaded
                raise MediaError(f"{self.path.name}: the video has no frames")
            self._read_first_frame(first)
        return declared_video_s, declared_s

    def _read_stream(self, stream, container_s: float):
        self.width = int(stream.codec_context.width)
        self.height = int(stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise MediaError(f"{self.path.name}: unknown frame rate")
        self.fps = Fraction(rate)
        self.time_base = stream.time_base
        self.start_pts = int(stream.start_time or 0)
        self.duration = float(stream.duration * stream.time_base) if stream.duration else container_s
        self.declared_frames = int(stream.frames or 0)
        self.frame_count = self.declared_frames or int(round(self.duration * float(self.fps)))
        self.video_index = stream.index

    def _read_first_frame(self, first):
        """Orientation, HDR and colour description, from the first decoded frame."""
        self.rotation = int(round((first.rotation or 0) / 90.0)) % 4 * 90
        if self.rotation in (90, 270):
            self.width, self.height = self.height, self.width
        self.hdr = first.color_trc in HDR_TRANSFERS
        # an SDR output keeps the input's colour description; an HDR one is not HDR any more
        yuv = first.format.name.startswith("yuv")  # an RGB stream's tags say "RGB"
        self.color_tags = {tag: getattr(first, tag) for tag in COLOR_TAGS} if yuv and not self.hdr else {}
        self.pixel_format = first.format.name
        self.full_range = first.color_range == AVCOL_RANGE_JPEG or first.format.name.startswith("yuvj")

    def _refuse_if_cut_off(self, declared_video_s: Optional[float], declared_s: Optional[float]):
        """MediaError when the file holds less than its header declares: an interrupted recording, a download
        that did not finish. MP4 and AVI declare their frame count; Matroska and WebM only a duration (of the
        video track, or of the whole file, which the longest track spans). Said before any work, not after."""
        video = self.tracks[self.video_index]
        frame_s = 1 / float(self.fps)
        if self.declared_frames and video.packets < self.declared_frames:
            missing = self.declared_frames - video.packets
            raise MediaError(f"{self.path.name} is truncated: it holds {video.packets} of the {self.declared_frames} "
                             f"frames it declares ({missing} frames, {missing * frame_s:.2f} s, missing at the end)")
        if self.declared_frames or video.end is None:
            return
        # Held: from 0, or from the first packet when that is earlier (AAC and Opus start before 0), as the
        # declared durations count: a track that starts late still declares its end.
        if declared_video_s:
            declared, held = declared_video_s, video.end - min(video.start, 0.0)
        elif declared_s:
            spans = [track for track in self.tracks.values() if track.end is not None]
            declared, held = declared_s, max(t.end for t in spans) - min(min(t.start for t in spans), 0.0)
        else:
            return  # a live recording's Matroska declares nothing: there is nothing to compare with
        if declared - held > frame_s + 0.02:  # more than a frame (the times are rounded to a millisecond)
            missing = declared - held
            raise MediaError(f"{self.path.name} is truncated: it holds {held:.2f} s of the {declared:.2f} s it "
                             f"declares ({missing:.2f} s, about {int(round(missing / frame_s))} frames, missing at "
                             "the end)")

    def __iter__(self):
        import av

        decoded = 0
        try:
            with av.open(str(self.path), mode="r") as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    pts = frame.pts if frame.pts is not None else self.start_pts + decoded
                    seconds = float((pts - self.start_pts) * self.time_base)
                    image = frame_rgb(frame)
                    if self.rotation:
                        image = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
                    yield SourceFrame(image, seconds, decoded)
                    decoded += 1
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"cannot decode {self.path.name} after {decoded} frames: {one_line(error)}") from error
        if self.declared_frames and decoded < self.declared_frames:
            raise MediaError(
                f"{self.path.name} is truncated: decoded {decoded} of {self.declared_frames} frames"
            )

    def __len__(self):
        return self.frame_count

    def close(self):
        """Nothing to release: each iteration opens and closes its own container."""


register_source("file", lambda spec: Path(spec).is_file(), lambda spec, **options: FileSource(spec))
