"""Shared helpers for the streaming tests: synthetic face frames, clips with audio, fake sources,
sinks, restorers and a recording pyvirtualcam backend. Imported by the test modules (not a conftest)."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import cv2
import numpy as np
from skimage import data

from instantrestore.runtime.media import SourceFrame

# MediaPipe calls in tests get this limit (detector worker thread), on top of pytest-timeout.
MEDIAPIPE_TIMEOUT_S = 30.0


def astronaut() -> np.ndarray:
    """skimage's astronaut portrait, 512x512 RGB uint8: a real, frontal face."""
    return np.ascontiguousarray(data.astronaut())


def placed_face(canvas_size=(640, 480), scale=1.0, offset=(0.0, 0.0), source=None):
    """The astronaut scaled by `scale` and placed at `offset` on a grey canvas.

    Returns (frame, matrix) where matrix (2x3) maps astronaut pixels to frame pixels, so expected
    keypoints are matrix applied to the keypoints found on the astronaut itself.
    """
    source = astronaut() if source is None else source
    matrix = np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]], np.float64)
    width, height = canvas_size
    frame = cv2.warpAffine(
        source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(120, 120, 120)
    )
    return frame, matrix


def apply_affine(matrix, points) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def no_face_image(width=320, height=240) -> np.ndarray:
    """A gradient with a patch of skimage's coffee photo: texture, colour, no face."""
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    vertical = np.linspace(0, 80, height, dtype=np.float32)[:, None, None]
    image = np.clip(gradient * np.array([1.0, 0.6, 0.3]) + vertical, 0, 255).astype(np.uint8)
    coffee = data.coffee()[100:260, 150:350]
    image[40 : 40 + coffee.shape[0], 60 : 60 + coffee.shape[1]] = coffee[: height - 40, : width - 60]
    return np.ascontiguousarray(image)


def write_clip(path, frames, fps=25, audio=False, faststart=False, codec="libx264", rotation=0, hlg=False):
    """Encode RGB frames to a video file; with audio, add a mono AAC 440 Hz tone of the same length.
    rotation (degrees counter-clockwise) goes into the display matrix, as phones write it; hlg tags the
    stream as HDR (HLG transfer, BT.2020), as phones do (the pixels stay 8-bit)."""
    fps = Fraction(fps)
    height, width = frames[0].shape[:2]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        if hlg:
            video.codec_context.color_trc, video.codec_context.color_primaries = 18, 9
        if codec == "libx264":
            video.options = {"crf": "12", "preset": "ultrafast"}
        if audio:
            sound = container.add_stream("aac", rate=44100)
            sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio:
            sample_rate = 44100
            total = int(round(sample_rate * len(frames) / fps))
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sample_rate)).astype(np.float32)
            encode_mono(container, sound, tone, sample_rate)
    return path


def encode_mono(container, sound, samples, sample_rate) -> None:
    """Encode mono float samples into the audio stream `sound` of `container`, in 1024-sample frames, and flush."""
    for start in range(0, len(samples), 1024):
        chunk = av.AudioFrame.from_ndarray(samples[None, start: start + 1024], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, start
        for packet in sound.encode(chunk):
            container.mux(packet)
    for packet in sound.encode(None):
        container.mux(packet)


def write_frameless_clip(path):
    """A Matroska file with a video stream that holds no frames (only a second of silent audio)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = container.add_stream("aac", rate=44100)
        sound.layout = "mono"
        silence = np.zeros((1, 44100), np.float32)
        for start in range(0, 44100, 1024):
            chunk = av.AudioFrame.from_ndarray(silence[:, start: start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, start
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    return path


def read_frames(path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def audio_packets(path) -> list:
    """(payload bytes, pts, duration) of every audio packet, in order."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [
            (bytes(packet), packet.pts, packet.duration)
            for packet in container.demux(stream)
            if packet.size
        ]


def stream_info(path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {
            "frames": frames,
            "declared_frames": video.frames,
            "fps": video.average_rate,
            "duration": float(video.duration * video.time_base) if video.duration else None,
            "audio_streams": len(container.streams.audio),
        }


class FakeCamera:
    """A live source replaying frames at `fps` in real time, like a camera (live=True: not paced by
    run_live, it paces itself)."""

    live = True
    device = None

    def __init__(self, frames, fps=30.0):
        self.frames = list(frames)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.height, self.width = self.frames[0].shape[:2]
        self.frame_count = len(self.frames)

    def __iter__(self):
        start = time.monotonic()
        for index, frame in enumerate(self.frames):
            due = start + index / float(self.fps)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield SourceFrame(frame.copy(), index / float(self.fps), index)  # a camera's buffer is new each time

    def close(self):
        pass


class FaultyCamera:
    """A live source standing in for a webcam that breaks. It delivers `frames` (looping) at `fps`; once
    `fault_at` is set (an Event; None: from the start) and `after` more frames have come, its reads hang
    (fault="hang": blocked until close(), like a stuck driver read) or fail (fault="unplugged":
    CameraUnavailable, as CameraSource says it). fault=None: it never breaks."""

    live = True

    def __init__(self, frames, fps=30.0, fault=None, fault_at=None, after=0, device=0):
        self.frames, self.fault, self.fault_at, self.after, self.device = list(frames), fault, fault_at, after, device
        self.fps = Fraction(fps).limit_denominator(1001)
        self.height, self.width = self.frames[0].shape[:2]
        self.frame_count = 0
        self.released = threading.Event()

    def __iter__(self):
        from instantrestore.runtime.media import CameraUnavailable

        start, index = time.monotonic(), 0
        while not self.released.is_set():
            if self.fault and (self.fault_at is None or self.fault_at.is_set()):
                if self.after <= 0:
                    if self.fault == "hang":
                        self.released.wait()
                        return
                    raise CameraUnavailable(f"camera {self.device!r} stopped delivering frames")
                self.after -= 1
            delay = start + index / float(self.fps) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield SourceFrame(self.frames[index % len(self.frames)].copy(), index / float(self.fps), index)
            index += 1

    def close(self):
        self.released.set()


class RecordingSink:
    """Keeps every written frame with its timestamp and the wall time it arrived."""

    def __init__(self):
        self.frames = []
        self.timestamps = []
        self.arrivals = []
        self.closed = False
        self.aborted = False

    def write(self, image, timestamp=None):
        self.frames.append(np.array(image, copy=True))
        self.timestamps.append(timestamp)
        self.arrivals.append(time.monotonic())

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


class FakeVideoCapture:
    """cv2.VideoCapture as a webcam driver behaves: BGR frames of one size only (a request for another is
    noted and ignored), a settable rate, a few failed reads while it warms up, and nothing more after
    `frames` run out (unplugged). Tests set the class attributes (monkeypatch) and put the class in place
    of cv2.VideoCapture; `last` is the most recent instance."""

    opened = True
    frames: list = []
    period = 0.0  # seconds per read, like a real camera's frame interval
    last = None

    def __init__(self, device):
        self.device, self.requests, self.reads, self.released = device, {}, 0, False
        type(self).last = self

    def isOpened(self):
        return type(self).opened

    def set(self, prop, value):
        self.requests[prop] = value
        return prop in (cv2.CAP_PROP_FPS, cv2.CAP_PROP_FOURCC)

    def get(self, prop):
        height, width = self.frames[0].shape[:2]
        actual = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height,
                  cv2.CAP_PROP_FPS: self.requests.get(cv2.CAP_PROP_FPS, 30.0)}
        return actual.get(prop, 0.0)

    def read(self):
        self.reads += 1
        time.sleep(self.period)
        if self.reads <= 2:  # warming up
            return False, None
        index = self.reads - 3
        if index >= len(self.frames):
            return False, None
        return True, cv2.cvtColor(self.frames[index], cv2.COLOR_RGB2BGR)

    def release(self):
        self.released = True


class RecordingVirtualCamera:
    """A pyvirtualcam backend (see pyvirtualcam.register_backend) that records the frames it gets."""

    instances = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "recording-virtual-camera"
        self.frames = []
        self.arrivals = []  # time.monotonic() of each frame
        self.closed = False
        RecordingVirtualCamera.instances.append(self)

    def send(self, frame):
        self.frames.append(np.array(frame, copy=True))
        self.arrivals.append(time.monotonic())

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return None


class BrokenVirtualCamera:
    """A pyvirtualcam backend that fails like a missing v4l2loopback device."""

    def __init__(self, **kw):
        raise RuntimeError("device /dev/video42 does not exist")


def invert_restore(batch: np.ndarray) -> np.ndarray:
    """A fake restorer that changes every crop pixel visibly."""
    return 255 - batch


class SlowRestore:
    """A fake restorer taking `delay` seconds per call; records batch sizes and call times."""

    def __init__(self, delay: float):
        self.delay = delay
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, batch):
        time.sleep(self.delay)
        with self._lock:
            self.calls.append((time.monotonic(), len(batch)))
        return 255 - batch


class FailingRestore:
    """Raises on the n-th call (1-based), to test that failures leave no partial output."""

    def __init__(self, fail_at: int):
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("restorer failed on purpose")
        return 255 - batch


# ----------------------------------------------------------------- recordings as cameras and phones write them


def write_webcam_avi(path, frames, fps=25, channels=2, sample_rate=16000, sample_format="s16"):
    """An AVI as webcams and dashcams record it: MJPEG picture (full-range yuvj420p) and PCM sound (s16le by
    default; u8 as some cheap cameras write) of the same length, a 440 Hz tone. The AVI reader gives the PCM
    only its channel count ("2 channels"), no layout."""
    codec = {"s16": "pcm_s16le", "u8": "pcm_u8"}[sample_format]
    layout = "stereo" if channels == 2 else "mono"
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("mjpeg", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuvj420p"
        sound = container.add_stream(codec, rate=sample_rate)
        sound.layout, sound.format = layout, sample_format
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in video.encode(picture.reformat(format="yuvj420p")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        total = int(round(sample_rate * len(frames) / fps))
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sample_rate)
        samples = (tone * 32767).astype(np.int16) if sample_format == "s16" else (128 + tone * 127).astype(np.uint8)
        interleaved = np.repeat(samples[:, None], channels, axis=1).reshape(1, -1)
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(interleaved), format=sample_format, layout=layout)
        chunk.sample_rate, chunk.pts = sample_rate, 0
        for packet in sound.encode(chunk):
            container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    return path


def write_matroska(path, frames, fps=25, codec="libx264", pix_fmt="yuv420p", sound="aac", subtitles=None):
    """A Matroska (or, by its name, WebM) recording with the frames, and: sound (an AAC or Opus tone of the same
    length; "empty": an AAC track with no packets; None: no track) and subtitles (a list of (start_s, end_s,
    text), muxed as SubRip through FFmpeg's own .srt reader, as a player or mkvmerge would find them)."""
    fps = Fraction(fps)
    height, width = frames[0].shape[:2]
    srt = None
    if subtitles:
        def stamp(seconds):
            millis = int(round(seconds * 1000))
            return f"{millis // 3600000:02d}:{millis // 60000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"
        srt_path = f"{path}.srt"
        with open(srt_path, "w", encoding="utf-8") as handle:
            for number, (start, end, text) in enumerate(subtitles, 1):
                handle.write(f"{number}\n{stamp(start)} --> {stamp(end)}\n{text}\n\n")
        srt = av.open(srt_path)
    try:
        with av.open(str(path), "w") as container:
            video = container.add_stream(codec, rate=fps)
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
            if codec == "libx264":
                video.options = {"crf": "12", "preset": "ultrafast"}
            audio = None
            if sound:
                audio = container.add_stream("libopus" if sound == "opus" else "aac", rate=48000)
                audio.layout = "mono"
            text_stream = container.add_stream_from_template(srt.streams.subtitles[0]) if srt else None
            for frame in frames:
                for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
            if sound in ("aac", "opus"):
                total = int(round(48000 * len(frames) / fps))
                tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
                step = 960
                for start in range(0, total, step):
                    chunk = av.AudioFrame.from_ndarray(tone[None, start: start + step], format="fltp", layout="mono")
                    chunk.sample_rate, chunk.pts = 48000, start
                    for packet in audio.encode(chunk):
                        container.mux(packet)
                for packet in audio.encode(None):
                    container.mux(packet)
            if srt:
                for packet in srt.demux(srt.streams.subtitles[0]):
                    if packet.size:
                        packet.stream = text_stream
                        container.mux(packet)
    finally:
        if srt:
            srt.close()
    return path


def cut_off(path, out_path, fraction):
    """The first `fraction` of a file's bytes: a recording interrupted, a download that did not finish."""
    data = open(path, "rb").read()
    with open(out_path, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
    return out_path


def subtitle_cues(path) -> list:
    """(codec, [(start_s, end_s, text), ...]) of a file's first subtitle track, decoded by FFmpeg; times from
    the first frame of the picture, as a viewer sees them (a muxer may shift every track alike)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        picture_starts = float((video.start_time or 0) * video.time_base)
        stream = container.streams.subtitles[0]
        cues = []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            decoded = stream.codec_context.decode2(packet)
            for cue in decoded or ():
                text = cue.ass.decode().split(",", 8)[-1]  # ASS dialogue: the text is the last field
                start = float(packet.pts * packet.time_base) - picture_starts
                cues.append((round(start, 3), round(start + float(packet.duration * packet.time_base), 3), text))
        return stream.codec_context.name, cues


def stream_kinds(path) -> list:
    """(type, codec name) of every stream of a file, in order."""
    with av.open(str(path)) as container:
        return [(stream.type, stream.codec_context.name if stream.codec_context else None)
                for stream in container.streams]


# ------------------------------------------------------------------- sound and picture together (lip sync)


def write_flash_and_click(path, frames, fps=25, flash=6, audio_lead_s=0.0, sample_rate=44100):
    """An MP4 clip whose frame `flash` is white and whose AAC sound (mono, silent otherwise) has a click at that
    frame's time: the clapperboard of film sets. With audio_lead_s the sound starts that long before the
    picture (the video track's first time is audio_lead_s), as cameras that start recording sound first write."""
    fps = Fraction(fps)
    frames = [np.ascontiguousarray(frame) for frame in frames]
    frames[flash] = np.full_like(frames[flash], 255)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "12", "preset": "ultrafast"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        lead = int(round(audio_lead_s * fps))  # in frames: the video track's time base is one frame
        assert lead == audio_lead_s * fps, "audio_lead_s must be a whole number of frames"
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = lead + index, 1 / fps
            for packet in video.encode(picture):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        total = int(round(sample_rate * (audio_lead_s + len(frames) / fps)))
        samples = np.zeros(total, np.float32)
        click = int(round(sample_rate * (audio_lead_s + flash / fps)))
        samples[click: click + 32] = 0.9  # a short square pulse: its onset survives AAC
        encode_mono(container, sound, samples, sample_rate)
    return path


def flash_and_click_times(path) -> tuple:
    """(flash_s, click_s) in a file, on the timeline both tracks share (each frame's and sample's own time, as
    a player schedules them): the first frame that is nearly white, the first sample loud enough to be the click."""
    with av.open(str(path)) as container:
        flash = next(float(frame.time) for frame in container.decode(video=0)
                     if frame.to_ndarray(format="rgb24").mean() > 200)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples = np.abs(frame.to_ndarray()[0])
            loud = np.flatnonzero(samples > 0.3)
            if loud.size:
                return flash, float(frame.time) + loud[0] / frame.sample_rate
    raise AssertionError(f"no click in {path}")
