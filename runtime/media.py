"""Frame sources and sinks: video files (PyAV), cameras (OpenCV), the virtual camera (pyvirtualcam), frames in
memory, a preview window, and the sinks that resize and fan out the frames of a camera run.

Every source is a `Source` and every sink a `Sink` (the Protocols below), so the runners use them without probing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Protocol, runtime_checkable

import numpy as np

from .errors import InstantRestoreError
from .files import commit_temp_file, new_temp, output_target
from .remux import TrackCopier, duration_tag, plan_tracks, scan_tracks


class MediaError(InstantRestoreError):
    """A video file, camera or virtual camera cannot be read or written."""


class CameraUnavailable(MediaError):
    """The capture camera cannot be opened or stopped delivering frames."""


class VirtualCameraUnavailable(MediaError):
    """No virtual camera could be opened; the message carries pyvirtualcam's reason."""


HDR_TRANSFERS = (16, 18)  # FFmpeg's AVColorTransferCharacteristic: SMPTE ST 2084 (PQ), ARIB STD-B67 (HLG)


# The AVFrame fields of a stream's colour description (matrix, primaries, transfer), carried from input to output.
COLOR_TAGS = ("colorspace", "color_primaries", "color_trc")
AVCOL_RANGE_JPEG = 2  # full-range YUV


def _frame_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB by the BT.601 matrix that FileSink encodes with, rounded, so untouched pixels
    come out with the YUV values they came in with. (swscale's default yuv->rgb path truncates, about -1 level
    per channel; it also follows the stream's matrix tag, which FileSink's OpenCV conversion cannot.)"""
    import cv2
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    if frame.width % 2 or frame.height % 2:  # no 4:2:0 layout: swscale, with exact rounding
        return frame.reformat(format="rgb24", src_colorspace=Colorspace.ITU601,
                              interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND |
                              Interpolation.FULL_CHR_H_INT).to_ndarray()
    if frame.format.name != "yuv420p" or frame.color_range == AVCOL_RANGE_JPEG:  # 10-bit, 4:4:4, full range ...
        # to 8-bit limited-range 4:2:0; YUV stays in its own matrix (converting it would shift the colours)
        matrix = {} if frame.format.name.startswith("yuv") else {"dst_colorspace": Colorspace.ITU601}
        frame = frame.reformat(format="yuv420p", src_color_range=frame.color_range or None,
                               dst_color_range=ColorRange.MPEG,
                               interpolation=Interpolation.POINT | Interpolation.ACCURATE_RND, **matrix)
    return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)


class SourceFrame(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB, the receiver's own: the runners paste the restored faces into it
    time: float  # seconds since the first frame of the source
    index: int


@runtime_checkable
class Source(Protocol):
    """Where frames come from. live: a camera, which paces itself (a file is played at its fps by the live runner).
    frame_count: 0 when unknown or unbounded. device: the camera it reads (index or path), None for a file."""

    live: bool
    width: int
    height: int
    fps: Fraction
    frame_count: int
    device: object

    def __iter__(self) -> Iterator[SourceFrame]: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where frames go. close() finishes (a file is complete); abort() stops without finishing (a file sink leaves
    nothing behind; a live sink just closes)."""

    def write(self, image: np.ndarray, timestamp: Optional[float] = None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _check_image(image, width, height) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (height, width, 3):
        raise MediaError(f"expected an RGB uint8 frame of shape ({height}, {width}, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def check_video_file(path: Path) -> None:
    """MediaError unless `path` is a file to read a video from, saying what it is instead (a FIFO or a device
    would block or never end; neither is opened)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise MediaError(f"video file not found: {path}") from None
    except OSError as error:
        raise MediaError(f"cannot read {path}: {error.strerror or _one_line(error)}") from None
    if stat.S_ISREG(mode):
        return
    kind = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a device",
            stat.S_ISBLK: "a disk device", stat.S_ISSOCK: "a socket"}
    what = next((name for test, name in kind.items() if test(mode)), "not a regular file")
    raise MediaError(f"{path} is {what}, not a video file")


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
            with av.open(str(self.path), mode="r") as container:
                if not container.streams.video:
                    raise MediaError(f"{self.path.name}: no video stream")
                stream = container.streams.video[0]
                self.width = int(stream.codec_context.width)
                self.height = int(stream.codec_context.height)
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                if not rate or rate <= 0:
                    raise MediaError(f"{self.path.name}: unknown frame rate")
                self.fps = Fraction(rate)
                self.time_base = stream.time_base
                self.start_pts = int(stream.start_time or 0)
                if stream.duration:
                    self.duration = float(stream.duration * stream.time_base)
                elif container.duration:
                    self.duration = container.duration / av.time_base
                else:
                    self.duration = 0.0
                self.declared_frames = int(stream.frames or 0)
                self.frame_count = self.declared_frames or int(round(self.duration * float(self.fps)))
                self.audio_stream_count = len(container.streams.audio)
                declared_video_s = (float(stream.duration * stream.time_base) if stream.duration
                                    else duration_tag(stream.metadata))
                declared_s = container.duration / av.time_base if container.duration else None
                self.video_index = stream.index
                first = next(container.decode(stream), None)
                if first is None:  # said now, not after the model has loaded
                    raise MediaError(f"{self.path.name}: the video has no frames")
                self.rotation = int(round((first.rotation if first is not None else 0) / 90.0)) % 4 * 90
                if self.rotation in (90, 270):
                    self.width, self.height = self.height, self.width
                self.hdr = first is not None and first.color_trc in HDR_TRANSFERS
                # an SDR output keeps the input's colour description; an HDR one is not HDR any more
                yuv = first is not None and first.format.name.startswith("yuv")  # an RGB stream's tags say "RGB"
                self.color_tags = {tag: getattr(first, tag) for tag in COLOR_TAGS} if yuv and not self.hdr else {}
                self.pixel_format = first.format.name
                self.full_range = first.color_range == AVCOL_RANGE_JPEG or first.format.name.startswith("yuvj")
            self.tracks = scan_tracks(self.path, 1 / float(self.fps))
            # Matroska declares no frame count: the scan counted the frames (a packet each)
            self.frame_count = self.declared_frames or self.tracks[self.video_index].packets or self.frame_count
        except MediaError:
            raise
        except (av.FFmpegError, OSError, ValueError) as error:
            raise MediaError(f"cannot read video {self.path.name}: {_one_line(error)}") from error
        if self.width <= 0 or self.height <= 0:
            raise MediaError(f"{self.path.name}: video stream has no frame size")
        self._refuse_if_cut_off(declared_video_s, declared_s)

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
                    image = _frame_rgb(frame)
                    if self.rotation:
                        image = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
                    yield SourceFrame(image, seconds, decoded)
                    decoded += 1
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"cannot decode {self.path.name} after {decoded} frames: {_one_line(error)}") from error
        if self.declared_frames and decoded < self.declared_frames:
            raise MediaError(
                f"{self.path.name} is truncated: decoded {decoded} of {self.declared_frames} frames"
            )

    def __len__(self):
        return self.frame_count

    def close(self):
        """Nothing to release: each iteration opens and closes its own container."""


class CameraSource:
    """A capture camera through OpenCV. device: index (0, "0") or a device path ("/dev/video2").

    size: (width, height) to request; fps: rate to request. The camera may pick something else;
    width, height and fps report what it delivers.
    """

    live = True

    def __init__(self, device=0, size: Optional[tuple] = None, fps: Optional[float] = None):
        import cv2

        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device = device
        self._capture = cv2.VideoCapture(device)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraUnavailable(f"cannot open camera {device!r}")
        # the newest frame, not one queued in the driver: a busy moment must not add lasting latency
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if size is not None:
            # USB webcams give 720p and 1080p at full rate only as MJPEG (OpenCV asks for YUYV, often 10 fps
            # there); a camera without MJPEG keeps its own format
            self._capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, int(size[0]))
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, int(size[1]))
        if fps is not None:
            self._capture.set(cv2.CAP_PROP_FPS, float(fps))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reported = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(reported).limit_denominator(1001) if reported and reported > 0 else Fraction(fps or 30)
        self.frame_count = 0  # unbounded

    def __iter__(self):
        import cv2

        start = None
        index = 0
        failures = 0
        while self._capture is not None:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                failures += 1
                # A few failed reads happen while a camera warms up; many mean it is gone.
                if failures >= 30:
                    raise CameraUnavailable(f"camera {self.device!r} stopped delivering frames")
                time.sleep(0.01)
                continue
            failures = 0
            now = time.monotonic()
            start = now if start is None else start
            yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now - start, index)
            index += 1

    def close(self):
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class SteadyCamera:
    """A live source that rides out its camera's faults instead of ending the call's video.

    The camera (any live source; `camera`, else `open_camera()`) is read on a thread of its own, so a
    read that hangs (a driver stuck after a USB hiccup) does not hold up the caller. When no frame
    comes for `stall_s`, or the reads fail (an unplugged cable), it says so through `notify`, leaves the
    old camera to its thread and calls `open_camera()` again, every `retry_interval_s`, until frames
    come back; after `retry_s` without one it raises CameraUnavailable. Meanwhile no frame comes out,
    and run_live repeats the last one, so the virtual camera keeps its rate. Frame times are counted
    from the first frame on this object's clock, so they keep increasing across reopenings.
    """

    live = True

    def __init__(self, open_camera, camera=None, stall_s: float = 2.0, retry_s: float = 30.0,
                 retry_interval_s: float = 0.5, notify=None):
        self._open_camera = open_camera
        self.stall_s, self.retry_s, self.retry_interval_s = float(stall_s), float(retry_s), float(retry_interval_s)
        self._notify = notify if notify is not None else (lambda message: None)
        self._camera = camera if camera is not None else open_camera()
        self.device = self._camera.device
        self.width, self.height, self.fps = self._camera.width, self._camera.height, self._camera.fps
        self.frame_count = 0  # unbounded
        self._latest = queue.Queue(maxsize=1)  # the newest frame, or the error that ended the reads
        self._reader = None
        self._closed = threading.Event()
        self._start = None
        self._index = 0
        self._failing_since = None  # when the current fault began; None while frames come
        self._generation = 0  # a new iteration (run_live after the passthrough) retires the older one

    def _name(self) -> str:
        return f"camera {self.device!r}" if self.device is not None else "the camera"

    def _offer(self, item):
        while True:
            try:
                return self._latest.put_nowait(item)
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._latest.get_nowait()

    def _start_reader(self):
        camera = self._camera

        def read():
            try:
                for item in camera:
                    if self._closed.is_set() or self._camera is not camera:
                        return  # closed, or given up on while this read hung
                    self._offer(item.image)
                if self._camera is camera:
                    self._offer(CameraUnavailable(f"{self._name()} ended its stream"))
            except Exception as error:  # handed to the consumer, which reopens the camera
                if self._camera is camera:
                    self._offer(error)
            finally:
                with contextlib.suppress(Exception):
                    camera.close()

        self._reader = threading.Thread(target=read, name="instantrestore-camera", daemon=True)
        self._reader.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed.is_set()

    def _reopen(self, why: str, generation: int):
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._notify(f"{why}; reopening it (for up to {self.retry_s:g} s; the virtual camera repeats the last "
                         "frame meanwhile)")
        else:  # it opened but failed again: not every retry is worth a line
            self._closed.wait(self.retry_interval_s)
        self._camera = None  # a hung reader closes its camera once its read returns
        while self._current(generation):
            try:
                self._camera = self._open_camera()
                self._start_reader()
                return
            except Exception as error:  # not back yet (unplugged, or still held by the hung read)
                why = _one_line(error)
            if time.monotonic() - self._failing_since >= self.retry_s:
                raise CameraUnavailable(f"{self._name()} is gone: no frames for {self.retry_s:g} s ({why})")
            self._closed.wait(self.retry_interval_s)

    def __iter__(self):
        self._generation += 1
        generation = self._generation
        if self._reader is None:
            self._start_reader()
        while self._current(generation):
            try:
                item = self._latest.get(timeout=self.stall_s)
            except queue.Empty:
                self._reopen(f"{self._name()} has sent no frame for {self.stall_s:g} s", generation)
                continue
            if isinstance(item, BaseException):
                self._reopen(f"reading {self._name()} failed ({_one_line(item)})", generation)
                continue
            if self._failing_since is not None:
                self._notify(f"{self._name()} is back after {time.monotonic() - self._failing_since:.1f} s")
                self._failing_since = None
            now = time.monotonic()
            self._start = now if self._start is None else self._start
            yield SourceFrame(item, now - self._start, self._index)
            self._index += 1

    def close(self):
        self._closed.set()
        reader, camera = self._reader, self._camera
        if reader is None:
            if camera is not None:
                camera.close()
        else:  # its reader closes the camera after the read in progress, unless that read hangs
            reader.join(timeout=1.0)


def pixel_words(pixel_format: str, full_range: bool) -> str:
    """A pixel format in words: "10-bit 4:2:0", "8-bit RGB", "8-bit palette" (", full range" for YUV)."""
    import av

    try:
        layout = av.VideoFormat(pixel_format, 64, 64)
    except (ValueError, av.FFmpegError):
        return pixel_format
    bits = max((component.bits for component in layout.components), default=8)
    if layout.has_palette:
        return f"{bits}-bit palette"
    if layout.is_rgb or len(layout.components) < 3:
        return f"{bits}-bit {'RGB' if layout.is_rgb else 'grey'}"
    chroma = layout.components[1]
    sampling = {(64, 64): "4:4:4", (32, 64): "4:2:2", (32, 32): "4:2:0", (16, 64): "4:1:1"}
    words = f"{bits}-bit {sampling.get((chroma.width, chroma.height), 'YUV')}"
    return words + (", full range" if full_range else "")


def _pick_video_codec(preferred: Optional[str]) -> str:
    import av

    for name in ([preferred] if preferred else ["libx264", "mpeg4"]):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise MediaError(f"no usable video encoder ({preferred or 'libx264 or mpeg4'}) in PyAV's FFmpeg")


class FileSink:
    """Writes frames to a video file with PyAV (H.264 via libx264 when available, else MPEG-4 part 2).

    like: a FileSource; the output gets its frame size, frame rate, time base and audio streams
    (audio packets are copied, never re-encoded). Without like, give fps and size=(width, height).
    The file is written under a temporary name in the output folder and renamed on close(); abort()
    or a failure removes it, so there is never a partial output. The input is never written to.
    """

    def __init__(
        self,
        out_path,
        like: Optional[FileSource] = None,
        *,
        fps=None,
        size: Optional[tuple] = None,
        codec: Optional[str] = None,
        crf: int = 18,
        preset: str = "veryfast",
    ):
        import av

        self.out_path = Path(out_path)
        self.like = like
        if like is not None:
            if self.out_path.exists() and self.out_path.resolve() == like.path.resolve():
                raise MediaError(f"refusing to overwrite the input video {like.path.name}")
            fps = fps or like.fps
            size = size or (like.width, like.height)
        if fps is None or size is None:
            raise MediaError("FileSink needs like=FileSource or both fps and size")
        self.fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        self.width, self.height = int(size[0]), int(size[1])
        folder = self.out_path.parent if str(self.out_path.parent) else Path(".")
        if not folder.is_dir():
            raise MediaError(f"output folder does not exist: {folder}")
        try:
            target = output_target(self.out_path)
            # the temp name keeps the container's extension: PyAV picks the format by it
            temp_path = new_temp(target, f".partial{target.suffix[:32]}")
        except FileExistsError as error:
            raise MediaError(str(error)) from None
        except OSError as error:  # its own text may name our temp file: name the output
            raise MediaError(f"cannot write {self.out_path}: {error.strerror or _one_line(error)}") from None
        self._target = target
        self.temp_path = temp_path
        self.frames_written = 0
        self._closed = False
        self._container = None
        self._tracks = None
        self.notes = []  # what the output leaves out or changes besides the faces, one line each
        with self._aborted_on_error("create"):
            format_name = None if target.suffix else "mp4"
            self._container = av.open(str(self.temp_path), mode="w", format=format_name)
            codec_name = _pick_video_codec(codec)
            self._video = self._container.add_stream(codec_name, rate=self.fps)
            self._video.width, self._video.height = self.width, self.height
            even = self.width % 2 == 0 and self.height % 2 == 0
            if not even and codec_name != "libx264":
                raise MediaError(f"{codec_name} cannot encode an odd frame size {self.width}x{self.height}")
            self._video.pix_fmt = "yuv420p" if even else "yuv444p"
            if even and like is not None:  # the YUV values are the input's (see _frame_rgb): so is their meaning
                for tag, value in like.color_tags.items():
                    setattr(self._video.codec_context, tag, value)
            if codec_name == "libx264":
                self._video.options = {"crf": str(int(crf)), "preset": preset}
                # frame threads: about twice slice threads' throughput; their latency does not matter in a file
                self._video.codec_context.thread_type = "FRAME"
            else:
                self._video.bit_rate = max(2_000_000, self.width * self.height * 8)
            # Keep the input's time base so frame times (and so the duration) carry over exactly; AVI counts
            # frames rather than stamping them, so there the time base is one frame.
            self._frame_counted = self._container.format.name == "avi"
            keep = like is not None and not self._frame_counted
            self._time_base = like.time_base if keep else 1 / self.fps
            self._video.codec_context.time_base = self._time_base
            self._start_pts = like.start_pts if keep else 0
            if like is not None:
                self._carry_tracks(like, codec_name)

    def _carry_tracks(self, like: FileSource, codec_name: str):
        """The input's sound and subtitle tracks, each rehearsed into this container before any work; notes
        say what is left out, and what the picture's pixels become."""
        carries, self.notes = plan_tracks(like.path, like.tracks, like.video_index, self.out_path.name,
                                          self._container.format.name, codec_name)
        output = f"{self._video.pix_fmt} ({pixel_words(self._video.pix_fmt, full_range=False)})"
        source = f"{like.pixel_format} ({pixel_words(like.pixel_format, like.full_range)})"
        if output != source:
            self.notes.append(f"{like.path.name}'s pixels are {source}; the restored copy's are {output}")
        self._tracks = TrackCopier(like.path, carries, self._container)

    def write(self, image, timestamp: Optional[float] = None):
        """Encode one RGB uint8 frame; timestamp in seconds from the first frame (default: index/fps)."""
        import av

        if self._closed:
            raise MediaError("FileSink is closed")
        image = _check_image(image, self.width, self.height)
        if timestamp is None:
            timestamp = self.frames_written / float(self.fps)
        if self._video.pix_fmt == "yuv420p":  # OpenCV's conversion: same BT.601 colours, a fifth of swscale's time
            import cv2

            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if self._frame_counted:  # one frame per tick, whatever the timestamps (two may round alike)
            frame.pts = self.frames_written
        else:
            frame.pts = self._start_pts + int(round(timestamp / float(self._time_base)))
        frame.time_base = self._time_base
        try:
            if self._tracks is not None:
                self._tracks.mux_until(float(frame.pts * self._time_base))
            for packet in self._video.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as error:
            raise MediaError(f"cannot encode frame {self.frames_written} of {self.out_path}: "
                             f"{_one_line(error)}") from error
        self.frames_written += 1

    def close(self):
        """Flush, finish the file and move it to out_path. On any failure nothing is left behind."""
        if self._closed:
            return
        with self._aborted_on_error("finish"):
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._tracks is not None:
                self._tracks.mux_until(None)
            self._container.close()
            self._close_tracks()
            if self.frames_written == 0:
                raise MediaError(f"no frames were written to {self.out_path.name}")
            commit_temp_file(self.temp_path, self._target)
            self._closed = True

    @contextlib.contextmanager
    def _aborted_on_error(self, doing: str):
        """Any failure removes the temporary file and is raised as one MediaError line."""
        try:
            yield
        except Exception as error:
            self.abort()
            if isinstance(error, InstantRestoreError):
                raise MediaError(str(error)) from None
            # the error's own text may name our temp file; the user knows the output by the name they gave
            reason = error.strerror if isinstance(error, OSError) and error.strerror else _one_line(error)
            reason = reason.replace(str(self.temp_path), str(self.out_path)).replace(self.temp_path.name,
                                                                                  self.out_path.name)
            raise MediaError(f"cannot {doing} {self.out_path}: {reason}") from error

    def _close_tracks(self):
        if self._tracks is not None:
            self._tracks.close()
            self._tracks = None

    def abort(self):
        """Stop writing and delete the temporary file; out_path is left as it was."""
        self._closed = True
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        self._close_tracks()
        try:
            self.temp_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class VirtualCameraSink:
    """Sends frames to a virtual webcam through pyvirtualcam.

    backend: pyvirtualcam backend name (None tries all: v4l2loopback, OBS, Unity Capture ...);
    device: a specific device, e.g. "/dev/video10". Raises VirtualCameraUnavailable with
    pyvirtualcam's reason when no virtual camera can be opened.
    """

    live = True

    def __init__(self, width: int, height: int, fps: float, backend: Optional[str] = None, device: Optional[str] = None):
        try:
            import pyvirtualcam
        except ImportError as error:
            raise VirtualCameraUnavailable(f"pyvirtualcam is not installed: {error}") from error
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(sorted(pyvirtualcam.camera.BACKENDS)) or "none"
            raise VirtualCameraUnavailable(f"unknown virtual camera backend {backend!r} (available: {known})")
        try:
            self._camera = pyvirtualcam.Camera(
                self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend, device=device
            )
        except Exception as error:
            raise VirtualCameraUnavailable(f"no virtual camera available: {_one_line(error)}") from error
        self.device = self._camera.device
        self.backend = self._camera.backend
        self.frames_written = 0

    def write(self, image, timestamp: Optional[float] = None):
        if self._camera is None:
            raise MediaError("virtual camera is closed")
        self._camera.send(_check_image(image, self.width, self.height))
        self.frames_written += 1

    def close(self):
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    abort = close  # nothing to leave behind

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def display_problem() -> Optional[str]:
    """Why no window can open here, or None. On Linux a window needs an X11 or Wayland display, and
    OpenCV's Qt aborts the whole process (signal 6) when it finds none; Windows and macOS have a desktop."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


class PreviewClosed(Exception):
    """The user closed the preview window: the camera run stops as on Ctrl+C."""


class PreviewSink:
    """An OpenCV window showing the output (optional; needs a desktop). Closing it with q or Esc raises
    PreviewClosed from write(). overlay(image) -> image draws on what the window shows (the --stats line).
    Without a display it raises MediaError, before any window is tried."""

    def __init__(self, title: str = "InstantRestore preview", overlay=None):
        problem = display_problem()
        if problem:
            raise MediaError(problem)
        self.title = title
        self.overlay = overlay
        self.frames_written = 0

    def write(self, image, timestamp: Optional[float] = None):
        import cv2

        shown = image if self.overlay is None else self.overlay(image)
        cv2.imshow(self.title, cv2.cvtColor(np.asarray(shown), cv2.COLOR_RGB2BGR))
        self.frames_written += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise PreviewClosed()

    def close(self):
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass

    abort = close


def fit_frame(image: np.ndarray, size: tuple) -> np.ndarray:
    """The frame at (width, height), never stretched: a frame of another shape is cropped around its centre to the
    output's shape first (a 4:3 camera in a 16:9 output loses strips at the top and bottom, as call apps crop),
    then scaled."""
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
    return cv2.resize(np.ascontiguousarray(image), size,
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class FittedSink:
    """Writes each frame to `sink` at `size` (width, height), cropped and scaled by fit_frame: a camera that
    delivers another size than the virtual camera's."""

    def __init__(self, sink: Sink, size: tuple):
        self.sink, self.size = sink, (int(size[0]), int(size[1]))

    def write(self, image, timestamp: Optional[float] = None):
        self.sink.write(fit_frame(image, self.size), timestamp)

    def close(self):
        self.sink.close()

    def abort(self):
        self.sink.abort()


class TeeSink:
    """Writes each frame to every one of `sinks`, in order (the virtual camera, then the preview ...)."""

    def __init__(self, *sinks: Sink):
        self.sinks = sinks

    def write(self, image, timestamp: Optional[float] = None):
        for sink in self.sinks:
            sink.write(image, timestamp)

    def close(self):
        for sink in self.sinks:
            sink.close()

    def abort(self):
        for sink in self.sinks:
            sink.abort()


class MemorySource:
    """Frames already in memory (synthetic frames, a clip decoded beforehand) played in a loop at `fps`, `total`
    frames in all (default: each once). Each frame comes out as a copy of its own, as a decoder's does."""

    live = False
    device = None

    def __init__(self, frames, fps: float = 30.0, total: Optional[int] = None):
        self.frames = list(frames)
        if not self.frames:
            raise MediaError("no frames to play")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.height, self.width = self.frames[0].shape[:2]
        self.frame_count = len(self.frames) if total is None else int(total)

    def __iter__(self):
        for index in range(self.frame_count):
            yield SourceFrame(self.frames[index % len(self.frames)].copy(), index / float(self.fps), index)

    def close(self):
        """Nothing to release."""
