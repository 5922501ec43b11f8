"""`batch`'s videos: which inputs are picked up and where each one's output goes, and one video restored."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from instantrestore.runtime.errors import InstantRestoreError
from instantrestore.runtime.files import remove_temp, temp_files

# What `batch` picks up in a folder, and what FileSink writes (other containers come out as .mp4).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg",
                  ".wmv", ".flv", ".3gp"}
OUTPUT_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi"}
LIST_SUFFIXES = {".txt", ".lst"}  # a text file listing inputs, one per line


class BatchError(InstantRestoreError, ValueError):
    """A batch the user has to fix before anything runs (no inputs, clashing outputs, no Ray)."""


@dataclasses.dataclass
class Video:
    source: Path
    relative: Path  # of the output, under OUTDIR
    output: Path
    frames: int = 0
    key: dict = dataclasses.field(default_factory=dict)
    status: str = "pending"  # skipped | done | failed
    reason: str = ""
    faces_restored: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.relative.as_posix()


# ------------------------------------------------------------------------------------------ inputs


def collect_inputs(specs, out_dir: Path) -> list[Video]:
    """Files, folders (their videos, recursively, in a stable order) and text files listing paths, each
    mapped to an output under out_dir: a folder's videos keep their path relative to it, a file its name."""
    out_dir = Path(out_dir).resolve()
    found: list[tuple[Path, Path]] = []
    for spec in specs:
        found.extend(expand_input(Path(spec).expanduser(), out_dir, listed_in=None))
    videos, by_source, by_output = [], set(), {}
    for source, relative in found:
        resolved = source.resolve()
        if resolved in by_source:
            continue
        by_source.add(resolved)
        if relative.suffix.lower() not in OUTPUT_SUFFIXES:
            relative = relative.with_suffix(".mp4")
        if relative in by_output:
            raise BatchError(f"{source} and {by_output[relative]} would both be written to {out_dir / relative}; "
                             "give their folders instead, so their outputs keep their relative paths")
        by_output[relative] = source
        videos.append(Video(source=source, relative=relative, output=out_dir / relative))
    if not videos:
        raise BatchError("no videos to restore: give video files, folders holding videos, or a .txt list of them")
    return videos


def expand_input(path: Path, out_dir: Path, listed_in: Optional[Path]) -> list[tuple[Path, Path]]:
    """(video, its output's path under OUTDIR) for one input: a file, a folder or a list (not within a list)."""
    where = f" (listed in {listed_in})" if listed_in else ""
    if path.is_dir():
        videos = [p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not p.name.startswith(".") and out_dir not in p.resolve().parents]
        return sorted(((p, p.relative_to(path)) for p in videos), key=lambda pair: pair[1].as_posix())
    if not path.is_file():
        raise BatchError(f"{path}{where}: no such file or folder")
    if path.suffix.lower() in LIST_SUFFIXES and listed_in is None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise BatchError(f"cannot read the list {path}: {error}") from None
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return [pair for entry in entries
                for pair in expand_input((path.parent / Path(entry).expanduser()), out_dir, listed_in=path)]
    return [(path, Path(path.name))]


# ------------------------------------------------------------------------------------- one video


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A loaded model as `batch` shares it between videos: one crop restorer per profile (name ->
    `Restorer.crop_restorer(profile)`), the profiles themselves, and the crop size."""

    restorers: dict
    profiles: dict
    crop_size: int


@dataclasses.dataclass
class BatchWork:
    """What the runner (here or on Ray) is handed: the command's options, the bundle and profiles, the videos to
    restore, `record(video)` to call as each one ends (manifest, progress), `events(kind, **info)` for the caller
    ("worker", "started", "finished") and the command's progress for its lines."""

    options: object
    bundle: object
    profiles: dict
    pending: list
    record: Callable
    events: Callable
    progress: Callable


def restore_file(model: LoadedModel, video: Video, blend: float = 1.0, batch_size: int = 1,
                 progress: Optional[Callable] = None) -> dict:
    """Restore one recording, each recognised person with their own profile: frames, faces restored. No partial
    output on failure."""
    from instantrestore.runtime.media import FileSink, FileSource
    from instantrestore.runtime.frames.file_run import RecordingOptions, restore_recording

    source = FileSource(video.source)
    video.output.parent.mkdir(parents=True, exist_ok=True)  # a folder's videos keep their sub-folders
    sink = FileSink(video.output, like=source)
    stats = restore_recording(model.restorers, model.profiles, model.crop_size, source, sink,
                              RecordingOptions(blend, batch_size, progress))
    # the pipeline counts each face it pasted (not a stranger's, nor one whose restored crop was not finite)
    return {"frames": sink.frames_written, "faces_restored": int(stats.summary().get("faces_restored", 0))}


def remove_partials(output: Path) -> None:
    """The temp files a dead worker left for `output`: ours by name, and no other worker writes this output
    (its pid means nothing here: the worker may have run on another node)."""
    for path, _ in temp_files(output.parent, output.name):
        remove_temp(path)
