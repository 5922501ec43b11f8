"""`instantrestore video`: one recording restored into a new file, audio kept. The input, the output and the
profiles are checked before the slow model load, and a failed or cancelled run leaves no output behind."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

from instantrestore.runtime.errors import InstantRestoreError

from .. import home
from ..arguments import add_model_options, add_profile_option, check_blend
from ..engine import load_engine
from ..errors import PluginError
from ..progress import TERMINAL, Progress, count_text, faces_line, rate_text
from . import Outcome

NAME = "video"
SUMMARY = "restore a recorded video file (audio kept)"
DESCRIPTION = ("Restore a recorded video file frame by frame; frame count, rate and audio are kept, and the input is "
               "never modified.")
EXAMPLES = ("instantrestore video talk.mp4 -o talk.restored.mp4 --profile me",)


@dataclasses.dataclass
class Options:
    """What `video` was asked: the recording, the file to write, whose faces to restore (one profile name or
    several), the model (bundle, backend, device), frames per restorer call, strength, replacing the output."""

    input: str
    output: str
    profile: str | list
    bundle: Optional[str] = None
    backend: str = "auto"
    device: Optional[str] = None
    batch_size: int = 1
    blend: float = 1.0
    overwrite: bool = False

    def __post_init__(self):
        self.blend = check_blend(self.blend)
        if self.batch_size < 1:
            raise PluginError(f"--batch-size must be at least 1, got {self.batch_size}")


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help="the video to restore (never modified)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="the restored video to write")
    add_profile_option(parser)
    parser.add_argument("--batch-size", type=int, help="frames per restorer call (GPU throughput; default 1)")
    parser.add_argument("--blend", type=float, help="strength of the restored face, 0..1 (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    add_model_options(parser)


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _check_output(in_path: Path, out_path: Path, overwrite: bool) -> None:
    """PluginError unless `out_path` is a new file (or, with `overwrite`, one to replace) in an existing folder.
    The OS refusing even to look at the name (too long, a folder we may not search) is the user's to fix too."""
    from instantrestore.runtime.files import output_target

    try:
        if _same_file(in_path, out_path):
            raise PluginError(f"the output {out_path} is the input video; choose another output file")
        if out_path.is_dir():
            raise PluginError(f"the output {out_path} is a folder; give a file name such as {out_path / in_path.name}")
        folder = out_path.parent if str(out_path.parent) else Path(".")
        if not folder.is_dir():
            raise PluginError(f"the output folder {folder} does not exist")
        if output_target(out_path).exists() and not overwrite:
            raise PluginError(f"the output {out_path} exists; pass --overwrite to replace it")
    except OSError as error:
        if isinstance(error, InstantRestoreError):
            raise
        raise PluginError(f"cannot write {out_path}: {error.strerror or error}") from None


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """Restore every frame of the input into the output (audio copied), each enrolled person's face with their
    profile; an existing output is replaced only with `overwrite`. The Outcome's line: the output; its value: a
    summary. An exception raised by progress.work's callable or progress.on_frame cancels the run, leaving no
    output."""
    from instantrestore.runtime.media import FileSink, FileSource, check_video_file
    from instantrestore.runtime.frames.file_run import RecordingOptions, restore_recording

    in_path, out_path = Path(options.input), Path(options.output)
    check_video_file(in_path)  # a FIFO or a device is named as such, never opened
    _check_output(in_path, out_path, options.overwrite)
    bundle = home.resolve_bundle(options.bundle)
    profiles = home.load_profiles(options.profile, bundle)
    source = FileSource(in_path)
    if out_path.exists():
        progress(f"{out_path} exists; it will be replaced when the new file is complete")
    if source.hdr:
        progress(f"note: {in_path.name} is HDR (PQ/HLG); the restored copy is 8-bit SDR H.264, so its colours look "
                 "flatter than the original's on an HDR screen")

    # The output is opened (as a temp file) before the slow model load, so a bad name, or a track the output
    # container cannot hold, fails at once.
    sink = FileSink(out_path, like=source)
    for note in sink.notes:  # tracks left out, pixels that change format
        progress(f"note: {note}")
    try:
        restorer = load_engine(bundle, options.backend, options.device, None, progress)
    except BaseException:
        sink.abort()
        raise
    started = time.monotonic()
    bar = progress.work(f"restoring {in_path.name}")
    try:
        restorers = {name: restorer.crop_restorer(profile) for name, profile in profiles.items()}
        stats = restore_recording(restorers, profiles, restorer.crop_size, source, sink,
                                  RecordingOptions(options.blend, options.batch_size, bar, progress.on_frame))
    except BaseException:
        sink.abort()  # covers a failure before the recording starts (the restorers)
        raise
    finally:
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
    return Outcome([str(out_path)], value={"frames": frames, "no_face": no_face, "not_finite": not_finite,
                                           "seconds": elapsed, "stats": summary})
