"""`instantrestore batch`: many recordings, resumable, in one process or on a Ray cluster.

One video is never split: its tracking is temporal. In one process the model is loaded once and two
videos are in flight, so the next one's decode and tracking overlap the last one's encode while the
restorer (behind a lock) stays busy. With `--ray` (batch_ray.py), each worker loads the model once and takes
one video at a time. Which inputs are picked up and how one video is restored: batch_videos.py; what was made
from what, so a finished output is skipped: batch_manifest.py.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from instantrestore.runtime.files import sha256_file

from .. import home
from ..arguments import add_model_options, add_profile_option, check_blend
from ..batch_manifest import finished_entry, is_done, read_manifest, video_key, write_manifest
from ..batch_ray import CLUSTER_EXTRA, import_ray, run_on_ray
from ..batch_videos import BatchError, BatchWork, LoadedModel, Video, collect_inputs, restore_file
from ..messages import error_reason
from ..progress import TERMINAL, Progress
from . import Outcome

NAME = "batch"
SUMMARY = "restore many recordings, resumable; on this machine or a Ray cluster"
DESCRIPTION = ("Restore every video given (files, folders searched recursively, or .txt files listing paths) into "
               "OUTDIR, keeping each one's relative path and name. A rerun skips what is done (same input, bundle, "
               "profile and options; the output intact). One bad file does not stop the others; the exit code is 2 "
               "if any failed.")
EXAMPLES = ("instantrestore batch talks/ -o restored/ --profile me",
            "instantrestore batch list.txt -o /shared/restored --profile me --ray auto",
            "instantrestore batch /shared/talks -o /shared/restored --profile me --ray ray://head:10001")

LOCAL_VIDEOS_IN_FLIGHT = 2  # the next video's decode overlaps the last one's encode


class BatchStopped(BaseException):
    """Raised in a video's pipeline when the batch is interrupted: its sink is aborted, so no partial file."""


@dataclasses.dataclass
class Options:
    """What `batch` was asked: the inputs (files, folders, .txt lists), the folder to write into, whose faces to
    restore (one profile name or several), the model, the strength and frames per restorer call, where to run,
    and whether to redo what is done or replace files this batch did not write. The numbers are checked, and Ray
    looked for when asked for, before any work."""

    inputs: list
    out_dir: Path
    profile: object  # one profile name, or several (each recognised person restored with their own)
    bundle: Optional[str] = None
    backend: str = "auto"
    device: Optional[str] = None
    blend: float = 1.0
    batch_size: int = 1
    ray: Optional[str] = None  # None: one process; "local", "auto" or "ray://HOST:PORT"
    jobs: Optional[int] = None  # Ray workers (default: the cluster's GPUs, or 1)
    force: bool = False  # restore again what is done
    overwrite: bool = False  # replace files at output paths that this batch did not write

    def __post_init__(self):
        self.out_dir = Path(self.out_dir).expanduser()
        if self.batch_size < 1:
            raise BatchError(f"--batch-size must be at least 1, got {self.batch_size}")
        self.blend = check_blend(self.blend, BatchError)
        if self.jobs is not None and self.jobs < 1:
            raise BatchError(f"--jobs must be at least 1, got {self.jobs}")
        if self.ray is not None:
            import_ray()  # before any work: say how to install it


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders of videos, or .txt lists")
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="OUTDIR",
                        help="the folder to write into")
    add_profile_option(parser)
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray: alone, a local Ray runtime; `auto` or ray://HOST:PORT, a running cluster "
                             f"(inputs and outputs on storage every node sees; needs {CLUSTER_EXTRA})")
    parser.add_argument("--jobs", type=int, help="with --ray: how many workers (default: one per GPU of the cluster, "
                                                 "or 1 without GPUs)")
    parser.add_argument("--force", action="store_true", help="restore every video again, even those already done")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files at the output paths that this batch did not write (default: refuse)")
    parser.add_argument("--batch-size", type=int, help="frames per restorer call (default 1)")
    parser.add_argument("--blend", type=float, help="strength of the restored face, 0..1 (default 1)")
    add_model_options(parser)


class BatchProgress:
    """The overall bar (videos done, frames done, time left) labelled with the current video."""

    def __init__(self, videos: list[Video], progress: Progress):
        self.todo = [v for v in videos if v.status == "pending"]
        self.total_frames = sum(v.frames for v in self.todo)
        self.bar = progress.work("batch")
        self.done_frames, self.done_videos = 0, 0
        self.current: dict[str, int] = {}
        self.lock = threading.Lock()

    def frame(self, video: Video, done: int) -> None:
        with self.lock:
            self.current[video.name] = done
            self.draw(video)

    def finished(self, video: Video) -> None:
        with self.lock:
            self.current.pop(video.name, None)
            self.done_videos += 1
            self.done_frames += video.frames if video.status == "done" else 0
            self.draw(video)

    def draw(self, video: Video) -> None:
        self.bar.label = f"{self.done_videos}/{len(self.todo)} videos, now {video.name}"
        self.bar(self.done_frames + sum(self.current.values()), self.total_frames)

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------ the run


def sort_videos(videos: list[Video], manifest: dict, bundle_id: str, profile_sha256: str,
                options: Options) -> None:
    """Mark each video skipped (done before, intact), failed (unreadable, or its output is not ours to
    replace) or left pending."""
    from instantrestore.runtime.media import FileSource, MediaError

    for video in videos:
        if video.source.resolve() == video.output.resolve():
            video.status, video.reason = "failed", "its output would be the input itself"
            continue
        try:
            video.frames = FileSource(video.source).frame_count
            video.key = video_key(video, bundle_id, profile_sha256, options.blend)
        except (MediaError, OSError) as error:  # one bad file does not stop the others
            video.status, video.reason = "failed", error_reason(error)
            continue
        if not options.force and is_done(video, manifest.get(video.name)):
            video.status = "skipped"
            entry = manifest[video.name]
            video.frames, video.faces_restored = entry.get("frames", video.frames), entry.get("faces_restored", 0)
        elif video.output.exists() and video.name not in manifest and not options.overwrite:
            video.status = "failed"
            video.reason = f"{video.output} exists and was not written by this batch; --overwrite replaces it"


def plan_line(videos: list[Video], out_dir: Path) -> str:
    pending = sum(v.status == "pending" for v in videos)
    skipped = sum(v.status == "skipped" for v in videos)
    unreadable = len(videos) - pending - skipped
    return (f"{len(videos)} video{'s' if len(videos) != 1 else ''}: {pending} to restore, {skipped} already done"
            f"{', ' + str(unreadable) + ' unreadable' if unreadable else ''} -> {out_dir}")


def run_batch(options: Options, progress: Progress = TERMINAL, events: Optional[Callable] = None) -> list[Video]:
    """Restore every input video into options.out_dir; returns the videos with their outcome.
    events(kind, **info), if given, hears "worker" (pid), "started" (video, pid), "finished" (video)."""
    events = events or (lambda kind, **info: None)
    out_dir = options.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"the output {out_dir} is a file; give a folder")
    videos = collect_inputs(options.inputs, out_dir)
    bundle = home.resolve_bundle(options.bundle)
    profiles = home.load_profiles(options.profile, bundle)  # profiles made before recognition are upgraded here
    profile_sha256 = "+".join(sha256_file(home.profile_path(name)) for name in profiles)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    sort_videos(videos, manifest, bundle.bundle_id, profile_sha256, options)
    progress(plan_line(videos, out_dir))
    pending = [v for v in videos if v.status == "pending"]
    if not pending:
        return videos

    bar = BatchProgress(videos, progress)
    lock = threading.Lock()

    def record(video: Video) -> None:
        """Called as each video ends: the manifest is up to date after every video, so a stopped run resumes."""
        with lock:
            if video.status == "done":
                manifest[video.name] = finished_entry(video)
            else:
                manifest.pop(video.name, None)
            write_manifest(out_dir, manifest)
        bar.finished(video)
        events("finished", video=video)

    work = BatchWork(options, bundle, profiles, pending, record, events, progress)
    try:
        if options.ray is None:
            run_here(work, bar)
        else:
            run_on_ray(work)
    finally:
        bar.close()
    return videos


def shared_restorers(restorer, profiles: dict) -> dict:
    """One crop restorer per profile, all on the one model, which each video's pipeline calls in turn."""
    restore_lock = threading.Lock()

    def shared(restore):
        def shared_restore(crops):
            with restore_lock:
                return restore(crops)
        return shared_restore

    return {name: shared(restorer.crop_restorer(profile)) for name, profile in profiles.items()}


def run_here(work: BatchWork, bar: BatchProgress) -> None:
    """In this process: the model loaded once, LOCAL_VIDEOS_IN_FLIGHT videos at a time."""
    from ..engine import load_engine

    options = work.options
    restorer = load_engine(work.bundle, options.backend, options.device, None, work.progress)
    model = LoadedModel(shared_restorers(restorer, work.profiles), work.profiles, restorer.crop_size)
    stop = threading.Event()

    def frame_written(video: Video, done: int) -> None:
        if stop.is_set():
            raise BatchStopped()  # inside the video's pipeline: its sink is aborted
        bar.frame(video, done)

    def one(video: Video) -> None:
        work.events("started", video=video, pid=os.getpid())
        started = time.monotonic()
        try:
            result = restore_file(model, video, options.blend, options.batch_size,
                                  progress=lambda done, total: frame_written(video, done))
            video.status, video.frames, video.faces_restored = "done", result["frames"], result["faces_restored"]
        except Exception as error:  # noqa: BLE001 - reported in the summary; the other videos go on
            video.status, video.reason = "failed", error_reason(error)
        video.seconds = time.monotonic() - started
        work.record(video)

    pool = ThreadPoolExecutor(max_workers=LOCAL_VIDEOS_IN_FLIGHT, thread_name_prefix="batch-video")
    try:
        for future in [pool.submit(one, video) for video in work.pending]:
            future.result()
    except BaseException:  # Ctrl+C, SIGTERM: the videos at work stop at their next frame, leaving nothing
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """The batch, then its table (one row per video) on standard output and the totals said; status 2 if any video
    failed. The Outcome's value: the videos with their outcome."""
    started = time.monotonic()
    restoring: list[float] = []  # from the first video started to the last finished: after the model loads

    def timing(kind, **info):
        if kind in ("started", "finished"):
            restoring.append(time.monotonic())

    videos = run_batch(options, progress, events=timing)
    failed = [v for v in videos if v.status == "failed"]
    done = [v for v in videos if v.status == "done"]
    frames = sum(v.frames for v in done)
    elapsed = time.monotonic() - started
    rates = ""
    if done and len(restoring) > 1 and restoring[-1] > restoring[0]:
        busy = restoring[-1] - restoring[0]
        rates = (f"; {len(done) / busy:.2f} videos/s, {frames / busy:.1f} frames/s once the model was loaded "
                 f"({elapsed - busy:.1f} s of start-up)")
    progress(f"{len(done)} restored ({frames} frames in {elapsed:.1f} s{rates}), "
             f"{sum(v.status == 'skipped' for v in videos)} already done, {len(failed)} failed")
    return Outcome(summary_table(videos), status=2 if failed else 0, value=videos)


def summary_table(videos: list[Video]) -> list[str]:
    """The table `batch` prints: one row per video, its result, frames, faces restored and seconds."""
    rows = [("video", "result", "frames", "faces restored", "seconds")]
    for v in videos:
        if v.status == "failed":
            rows.append((v.name, f"failed: {v.reason}", "", "", ""))
        else:
            seconds = f"{v.seconds:.1f}" if v.status == "done" else "-"
            rows.append((v.name, v.status, str(v.frames), str(v.faces_restored), seconds))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)), row[4]]).rstrip() for row in rows]
