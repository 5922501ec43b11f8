"""Frame sources and sinks: video files (PyAV), cameras (OpenCV), the virtual camera (pyvirtualcam), frames in
memory, a preview window, and the sinks that resize and fan out the frames of a camera run. One module each.

Every source is a `Source` and every sink a `Sink` (base.py), so the runners use them without probing.
`open_source(spec)` / `open_sink(spec)` (registry.py) turn a spec into one; a new kind joins with one
`register_source` / `register_sink` call. The built-in modules register themselves when imported here, in this
order (a camera index or device before a file: the first match wins).
"""

from .base import (CameraUnavailable, MediaError, Sink, SinkNotFound, Source, SourceFrame, SourceNotFound,
                   VirtualCameraUnavailable)
from .camera_source import CameraSource
from .file_source import FileSource
from .memory_source import MemorySource
from .steady_camera import SteadyCamera
from .file_sink import FileSink
from .virtual_camera_sink import VirtualCameraSink
from .preview_sink import PreviewClosed, PreviewSink, display_problem
from .fitted_sink import FittedSink, fit_frame
from .tee_sink import TeeSink
from .probe import check_video_file, pixel_words
from .registry import open_sink, open_source, register_sink, register_source

__all__ = [
    "CameraSource", "CameraUnavailable", "FileSink", "FileSource", "FittedSink", "MediaError", "MemorySource",
    "PreviewClosed", "PreviewSink", "Sink", "SinkNotFound", "Source", "SourceFrame", "SourceNotFound",
    "SteadyCamera", "TeeSink", "VirtualCameraSink", "VirtualCameraUnavailable", "check_video_file",
    "display_problem", "fit_frame", "open_sink", "open_source", "pixel_words", "register_sink", "register_source",
]
