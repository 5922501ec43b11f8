"""Writes frames to a video file with PyAV, atomically, carrying the input's sound and subtitles."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Optional

from ..errors import InstantRestoreError
from ..files import commit_temp_file, new_temp, output_target
from .base import MediaError, check_image, one_line
from .file_source import FileSource
from .probe import pixel_words
from .registry import register_sink
from .remux import TrackCopier, plan_tracks

# libx264's quality (constant rate factor) and speed preset
X264_CRF = 18
X264_PRESET = "veryfast"


def pick_video_codec(preferred: Optional[str]) -> str:
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

    def __init__(self, out_path, like: Optional[FileSource] = None, *, fps=None, size: Optional[tuple] = None,
                 codec: Optional[str] = None):
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
        self._target, self.temp_path = self._new_temp_file()
        self.frames_written = 0
        self._closed = False
        self._container = None
        self._tracks = None
        self.notes = []  # what the output leaves out or changes besides the faces, one line each
        with self._aborted_on_error("create"):
            codec_name = self._open_video(codec)
            if like is not None:
                self._carry_tracks(like, codec_name)

    def _new_temp_file(self) -> tuple:
        """(the file out_path names, a new temporary file beside it)."""
        folder = self.out_path.parent if str(self.out_path.parent) else Path(".")
        if not folder.is_dir():
            raise MediaError(f"output folder does not exist: {folder}")
        try:
            target = output_target(self.out_path)
            # the temp name keeps the container's extension: PyAV picks the format by it
            return target, new_temp(target, f".partial{target.suffix[:32]}")
        except FileExistsError as error:
            raise MediaError(str(error)) from None
        except OSError as error:  # its own text may name our temp file: name the output
            raise MediaError(f"cannot write {self.out_path}: {error.strerror or one_line(error)}") from None

    def _open_video(self, codec: Optional[str]) -> str:
        """Opens the temporary file's container and its video stream; the codec's name."""
        import av

        format_name = None if self._target.suffix else "mp4"
        self._container = av.open(str(self.temp_path), mode="w", format=format_name)
        codec_name = pick_video_codec(codec)
        self._video = self._container.add_stream(codec_name, rate=self.fps)
        self._video.width, self._video.height = self.width, self.height
        even = self.width % 2 == 0 and self.height % 2 == 0
        if not even and codec_name != "libx264":
            raise MediaError(f"{codec_name} cannot encode an odd frame size {self.width}x{self.height}")
        self._video.pix_fmt = "yuv420p" if even else "yuv444p"
        like = self.like
        if even and like is not None:  # the YUV values are the input's (see frame_rgb): so is their meaning
            for tag, value in like.color_tags.items():
                setattr(self._video.codec_context, tag, value)
        if codec_name == "libx264":
            self._video.options = {"crf": str(X264_CRF), "preset": X264_PRESET}
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
        return codec_name

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
        image = check_image(image, self.width, self.height)
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
                             f"{one_line(error)}") from error
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
            reason = error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)
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


def open_file_sink(spec: str, like: Optional[FileSource] = None, fps=None, size: Optional[tuple] = None,
                   codec: Optional[str] = None, **ignored) -> FileSink:
    return FileSink(spec, like, fps=fps, size=size, codec=codec)


register_sink("file", lambda spec: bool(Path(spec).suffix), open_file_sink)
