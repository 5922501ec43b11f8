"""What a recording holds besides its picture, and how that reaches the restored file.

The input is scanned once, packet by packet without decoding (fast: no pixels), to learn each track's
packets and time span: FileSource uses it to find a cut-off file before any work. FileSink then plans each
sound and subtitle track: copied as it is, or (a text subtitle the output container cannot hold as it is)
converted to a text format the container holds, or left out with a note that says so. Before any work the
plan is rehearsed: every carried track is written, with a video stream of the output's codec, into a small
file in memory with the output's container, header to trailer, so a track the container refuses only when
the file is finished (PCM without a channel layout in MP4) is found at once, not after hours of restoring.
"""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction
from pathlib import Path
from typing import Optional

from ..errors import InstantRestoreError

# The layout a player assumes for a channel count (FFmpeg's av_channel_layout_default): what PCM that carries
# only its count ("2 channels", as AVI stores it) is written with, since the MP4 writer needs a layout.
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Subtitle formats that are text (each cue a line of ASS dialogue once decoded): they can be converted.
TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
# What a text subtitle is converted to, in order, when the output container cannot hold it as it is:
# MP4 and MOV hold mov_text (3GPP timed text), Matroska holds SubRip.
TEXT_TARGETS = ("mov_text", "subrip")


@dataclasses.dataclass
class Track:
    """One stream of the input as the scan found it. start and end in seconds (None: no packet with a time)."""

    index: int
    kind: str  # video, audio, subtitle, data, attachment
    codec: str
    packets: int = 0
    start: Optional[float] = None
    end: Optional[float] = None
    first: object = None  # its first packet, for the rehearsal

    def label(self) -> str:
        return f"{self.kind} stream #{self.index} ({self.codec})"


def scan_tracks(path, default_frame_s: float) -> dict:
    """Every stream of the file at `path` -> Track, from its packets (not decoded). A packet without a
    duration counts as `default_frame_s` long for video, as nothing for the others."""
    import av

    tracks = {}
    with av.open(str(path), mode="r") as container:
        for stream in container.streams:
            codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
            tracks[stream.index] = Track(stream.index, stream.type, codec)
        for packet in container.demux():
            if packet.pts is None and packet.dts is None:
                continue  # the demuxer's end marker
            track = tracks[packet.stream_index]
            track.packets += 1
            if track.first is None and packet.size:
                track.first = packet
            stamp = packet.pts if packet.pts is not None else packet.dts
            start = float(stamp * packet.time_base)
            length = float(packet.duration * packet.time_base) if packet.duration else 0.0
            if not length and track.kind == "video":
                length = default_frame_s
            track.start = start if track.start is None else min(track.start, start)
            track.end = start + length if track.end is None else max(track.end, start + length)
    return tracks


def duration_tag(metadata) -> Optional[float]:
    """A Matroska track's DURATION tag ("00:01:02.500000000", as FFmpeg and OBS write it) in seconds."""
    text = metadata.get("DURATION") if metadata else None
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


@dataclasses.dataclass
class Carry:
    """How one track reaches the output: "copy" (packets as they are) or a text subtitle format to convert to."""

    track: Track
    how: str = "copy"

    def add_to(self, container, template):
        """The output stream for this track, in `container`, made from the input stream `template`."""
        if self.how == "copy":
            stream = container.add_stream_from_template(template)
            if self.track.kind == "audio":
                layout = stream.codec_context.layout
                channels = len(layout.channels)
                if layout.name == f"{channels} channels" and channels in DEFAULT_LAYOUTS:  # count, no order
                    stream.codec_context.layout = DEFAULT_LAYOUTS[channels]
            return stream
        stream = container.add_stream(self.how)
        stream.codec_context.time_base = template.time_base
        decoder = template.codec_context
        decoder.open(strict=False)  # its ASS header (styles) appears once it is open
        stream.codec_context.subtitle_header = decoder.subtitle_header
        return stream

    def packets(self, packet, template, out_stream) -> list:
        """The packets to mux for one input packet of this track."""
        if self.how == "copy":
            packet.stream = out_stream
            return [packet]
        from av.subtitles.subtitle import SubtitleSet

        cues = template.codec_context.decode2(packet)
        if not cues or not len(cues) or not getattr(cues[0], "ass", None):
            return []
        cue = SubtitleSet.create(cues[0].ass, 0, packet.duration or 0, packet.pts)
        converted = out_stream.codec_context.encode_subtitle(cue)
        converted.time_base = packet.time_base
        converted.stream = out_stream
        return [converted]


class TrackError(InstantRestoreError):
    """A sound track the output container cannot hold."""


def can_convert_text() -> bool:
    """Whether this PyAV encodes subtitles (newer releases do; pyproject allows older ones, which copy only)."""
    from av.subtitles.codeccontext import SubtitleCodecContext
    from av.subtitles.subtitle import SubtitleSet

    return hasattr(SubtitleSet, "create") and hasattr(SubtitleCodecContext, "encode_subtitle")


def plan_tracks(in_path: Path, tracks: dict, video_index: int, out_name: str, format_name: str,
                video_codec: str) -> tuple[list, list]:
    """(carries, notes): how each sound and subtitle track of the input reaches an output of FFmpeg format
    `format_name` whose video is `video_codec`, each rehearsed; notes say what is left out and why.
    A sound track the container cannot hold raises TrackError, before any work."""
    carries, notes, others = [], [], []
    suffix = Path(out_name).suffix or ".mp4"
    for track in tracks.values():
        if track.index == video_index:
            continue
        if track.kind not in ("audio", "subtitle"):
            others.append(track)
            continue
        if not track.packets:
            what = "sound" if track.kind == "audio" else "subtitles"
            notes.append(f"{in_path.name}'s {track.label()} is empty (no {what} in it); the restored copy has no such "
                         "track")
            continue
        options = [Carry(track)]
        if track.kind == "subtitle" and track.codec in TEXT_SUBTITLES and can_convert_text():
            options += [Carry(track, target) for target in TEXT_TARGETS if target != track.codec]
        problem = None
        for carry in options:
            problem = rehearse(in_path, [carry], format_name, video_codec)
            if problem is None:
                carries.append(carry)
                break
        if problem is None:
            continue
        matroska = format_name == "matroska"  # holds nearly everything: the way round, unless it is the output
        if track.kind == "audio":
            raise TrackError(f"{in_path.name}'s {track.label()} cannot be written into a {suffix} file ({problem})"
                             f"{'' if matroska else '; write a .mkv, which holds it as it is'}")
        notes.append(f"{in_path.name}'s {track.label()} cannot go into a {suffix} file; it is left out"
                     f"{'' if matroska else ' (a .mkv output keeps it)'}")
    if others:
        listed = ", ".join(track.label() for track in others)
        notes.append(f"{in_path.name}'s {listed} {'is' if len(others) == 1 else 'are'} not copied (only picture, "
                     "sound and subtitles are)")
    if carries and rehearse(in_path, carries, format_name, video_codec) is not None:  # each held alone, not together
        raise TrackError(f"the tracks of {in_path.name} cannot be written together into a {suffix} file; write a "
                         ".mkv")
    return carries, notes


def rehearse(in_path: Path, carries: list, format_name: str, video_codec: str) -> Optional[str]:
    """Write a frame of `video_codec` and the first packet of each carried track into an in-memory file of
    format `format_name`, header to trailer. None when that worked, else FFmpeg's reason in a few words."""
    import av

    try:
        with av.open(str(in_path), mode="r") as source:
            output = av.open(io.BytesIO(), mode="w", format=format_name)
            try:
                video = output.add_stream(video_codec, rate=Fraction(25))
                video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
                templates = [source.streams[carry.track.index] for carry in carries]
                streams = [(carry, template, carry.add_to(output, template))
                           for carry, template in zip(carries, templates)]
                for packet in video.encode(av.VideoFrame(16, 16, "yuv420p")):
                    output.mux(packet)
                for packet in video.encode(None):
                    output.mux(packet)
                for carry, template, stream in streams:
                    for packet in carry.packets(carry.track.first, template, stream):
                        output.mux(packet)
            finally:
                output.close()
    except (av.FFmpegError, ValueError, TypeError) as error:
        text = " ".join(str(error).split()) or type(error).__name__
        return text.split(": '")[0]  # PyAV appends the (in-memory) file's name and FFmpeg's return code
    return None


class TrackCopier:
    """Carries the planned tracks of the input at `in_path` into `container`, interleaved with the video by time:
    mux_until(t) writes every packet up to t seconds; mux_until(None), the rest."""

    def __init__(self, in_path, carries: list, container):
        import av

        self._input = av.open(str(in_path), mode="r")
        self._carries = {carry.track.index: carry for carry in carries}
        streams = [self._input.streams[index] for index in self._carries]
        self._outputs = {index: self._carries[index].add_to(container, self._input.streams[index])
                         for index in self._carries}
        self._container = container
        self._packets = iter(self._input.demux(*streams)) if streams else None
        self._pending = None

    def mux_until(self, seconds: Optional[float]):
        while self._packets is not None:
            packet, self._pending = self._pending, None
            if packet is None:
                packet = next(self._packets, None)
                if packet is None:
                    self._packets = None
                    return
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's end marker, no data
            stamp = packet.pts if packet.pts is not None else packet.dts
            if seconds is not None and float(stamp * packet.time_base) > seconds:
                self._pending = packet
                return
            index = packet.stream_index
            template = self._input.streams[index]
            for out in self._carries[index].packets(packet, template, self._outputs[index]):
                self._container.mux(out)

    def close(self):
        if self._input is not None:
            self._input.close()
            self._input = None
            self._packets = None
