"""`instantrestore batch`: many recordings, resumable, in one process or on a Ray cluster.

One video is never split: its tracking is temporal. In one process the model is loaded once and two
videos are in flight, so the next one's decode and tracking overlap the last one's encode while the
restorer (behind a lock) stays busy. With `--ray`, each worker (a Ray actor holding one GPU, or a CPU
when the cluster has none) loads the model once from the bundle and profile the driver ships it, and
takes one video at a time; a worker that dies is replaced and its video retried, its partial file
removed.

What was made from what is kept in OUTDIR/.instantrestore-batch.json: a finished output is skipped
when its input, bundle, profile and options are the same and the output still has the hash we wrote.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from instantrestore.runtime.errors import InstantRestoreError
from instantrestore.runtime.files import atomic_write_json, remove_temp, sha256_file, temp_files

from . import home
from .cli import error_reason
from .progress import ProgressBar, say

# What `batch` picks up in a folder, and what FileSink writes (other containers come out as .mp4).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg",
                  ".wmv", ".flv", ".3gp"}
OUTPUT_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi"}
LIST_SUFFIXES = {".txt", ".lst"}  # a text file listing inputs, one per line
MANIFEST_NAME = ".instantrestore-batch.json"
MANIFEST_FORMAT = "instantrestore-batch"
LOCAL_VIDEOS_IN_FLIGHT = 2  # the next video's decode overlaps the last one's encode
RAY_RETRIES = 2  # a video whose worker died is tried this many more times
CLUSTER_EXTRA = 'pip install -e ".[cluster]" (from a checkout)'


class BatchError(InstantRestoreError, ValueError):
    """A batch the user has to fix before anything runs (no inputs, clashing outputs, no Ray)."""


class BatchStopped(BaseException):
    """Raised in a video's pipeline when the batch is interrupted: its sink is aborted, so no partial file."""


@dataclasses.dataclass
class BatchOptions:
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
        found.extend(_expand(Path(spec).expanduser(), out_dir, listed_in=None))
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


def _expand(path: Path, out_dir: Path, listed_in: Optional[Path]) -> list[tuple[Path, Path]]:
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
                for pair in _expand((path.parent / Path(entry).expanduser()), out_dir, listed_in=path)]
    return [(path, Path(path.name))]


# ------------------------------------------------------------------------------------------ manifest


def read_manifest(out_dir: Path) -> dict:
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        say(f"warning: {out_dir / MANIFEST_NAME} is unreadable; every video will be restored again")
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return {}
    videos = manifest.get("videos")
    return videos if isinstance(videos, dict) else {}


def write_manifest(out_dir: Path, entries: dict) -> None:
    atomic_write_json(out_dir / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "version": 1, "videos": entries})


def video_key(video: Video, bundle_id: str, profile_sha256: str, options: BatchOptions) -> dict:
    """What an output was made from: the same key and an intact output mean there is nothing to redo."""
    return {"input_sha256": sha256_file(video.source), "bundle_id": bundle_id, "profile_sha256": profile_sha256,
            "options": {"blend": options.blend}}


def is_done(video: Video, entry) -> bool:
    if not isinstance(entry, dict) or entry.get("key") != video.key or not video.output.is_file():
        return False
    return sha256_file(video.output) == entry.get("output_sha256")


# ------------------------------------------------------------------------------------- one video


def restore_file(restorers: dict, profiles: dict, crop_size: int, in_path, out_path, blend: float = 1.0,
                 batch_size: int = 1, progress: Optional[Callable] = None) -> dict:
    """Restore one recording with a loaded model's crop restorers (name -> `Restorer.crop_restorer(profile)`),
    each recognised person with their own: frames, faces restored. No partial output on failure."""
    from instantrestore.runtime.media import FileSink, FileSource
    from instantrestore.runtime.frames.file_run import restore_recording

    source = FileSource(in_path)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)  # a folder's videos keep their sub-folders
    sink = FileSink(out_path, like=source)
    stats = restore_recording(restorers, profiles, crop_size, source, sink, blend, batch_size, progress=progress)
    # the pipeline counts each face it pasted (not a stranger's, nor one whose restored crop was not finite)
    return {"frames": sink.frames_written, "faces_restored": int(stats.summary().get("faces_restored", 0))}


def remove_partials(output: Path) -> None:
    """The temp files a dead worker left for `output`: ours by name, and no other worker writes this output
    (its pid means nothing here: the worker may have run on another node)."""
    for path, _ in temp_files(output.parent, output.name):
        remove_temp(path)


# ------------------------------------------------------------------------------------------ the run


class BatchProgress:
    """The overall bar (videos done, frames done, time left) labelled with the current video."""

    def __init__(self, videos: list[Video]):
        self.todo = [v for v in videos if v.status == "pending"]
        self.total_frames = sum(v.frames for v in self.todo)
        self.bar = ProgressBar("batch")
        self.done_frames, self.done_videos = 0, 0
        self.current: dict[str, int] = {}
        self.lock = threading.Lock()

    def frame(self, video: Video, done: int) -> None:
        with self.lock:
            self.current[video.name] = done
            self._draw(video)

    def finished(self, video: Video) -> None:
        with self.lock:
            self.current.pop(video.name, None)
            self.done_videos += 1
            self.done_frames += video.frames if video.status == "done" else 0
            self._draw(video)

    def _draw(self, video: Video) -> None:
        self.bar.label = f"{self.done_videos}/{len(self.todo)} videos, now {video.name}:"
        self.bar(self.done_frames + sum(self.current.values()), self.total_frames)

    def close(self) -> None:
        self.bar.close()


def run_batch(options: BatchOptions, events: Optional[Callable] = None) -> list[Video]:
    """Restore every input video into options.out_dir; returns the videos with their outcome.
    events(kind, **info), if given, hears "worker" (pid), "started" (video, pid), "finished" (video)."""
    from instantrestore.runtime.media import FileSource, MediaError

    events = events or (lambda kind, **info: None)
    if options.batch_size < 1:
        raise BatchError(f"--batch-size must be at least 1, got {options.batch_size}")
    if not (0.0 <= options.blend <= 1.0):
        raise BatchError(f"--blend must be between 0 and 1, got {options.blend}")
    if options.jobs is not None and options.jobs < 1:
        raise BatchError(f"--jobs must be at least 1, got {options.jobs}")
    if options.ray is not None:
        _import_ray()  # before any work: say how to install it
    out_dir = Path(options.out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"the output {out_dir} is a file; give a folder")
    videos = collect_inputs(options.inputs, out_dir)
    bundle = home.resolve_bundle(options.bundle)
    profiles = home.load_profiles(options.profile, bundle)  # profiles made before recognition are upgraded here
    profile_sha256 = "+".join(sha256_file(home.profile_path(name)) for name in profiles)
    out_dir.mkdir(parents=True, exist_ok=True)

    manifest = read_manifest(out_dir)
    for video in videos:
        if video.source.resolve() == video.output.resolve():
            video.status, video.reason = "failed", "its output would be the input itself"
            continue
        try:
            video.frames = FileSource(video.source).frame_count
            video.key = video_key(video, bundle.bundle_id, profile_sha256, options)
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
    pending = [v for v in videos if v.status == "pending"]
    skipped = sum(v.status == "skipped" for v in videos)
    say(f"{len(videos)} video{'s' if len(videos) != 1 else ''}: {len(pending)} to restore, {skipped} already done"
        f"{', ' + str(len(videos) - len(pending) - skipped) + ' unreadable' if len(videos) - len(pending) - skipped else ''}"
        f" -> {out_dir}")
    if not pending:
        return videos

    progress = BatchProgress(videos)
    lock = threading.Lock()

    def record(video: Video) -> None:
        """Called as each video ends: the manifest is up to date after every video, so a stopped run resumes."""
        with lock:
            if video.status == "done":
                manifest[video.name] = {"input": str(video.source), "key": video.key,
                                        "output_sha256": sha256_file(video.output), "frames": video.frames,
                                        "faces_restored": video.faces_restored, "seconds": round(video.seconds, 3),
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            else:
                manifest.pop(video.name, None)
            write_manifest(out_dir, manifest)
        progress.finished(video)
        events("finished", video=video)

    try:
        if options.ray is None:
            _run_here(options, bundle, profiles, pending, progress, record, events)
        else:
            _run_on_ray(options, bundle, {name: home.profile_path(name) for name in profiles}, pending, record, events)
    finally:
        progress.close()
    return videos


def _run_here(options, bundle, profiles, pending, progress, record, events) -> None:
    from .engine import load_engine

    restorer = load_engine(bundle, options.backend, options.device, None, say)
    restore_lock = threading.Lock()

    def shared(restore):
        def shared_restore(crops):
            """The one model, called by each video's pipeline in turn."""
            with restore_lock:
                return restore(crops)
        return shared_restore

    restorers = {name: shared(restorer.crop_restorer(profile)) for name, profile in profiles.items()}

    stop = threading.Event()

    def frame_written(video: Video, done: int) -> None:
        if stop.is_set():
            raise BatchStopped()  # inside the video's pipeline: its sink is aborted
        progress.frame(video, done)

    def one(video: Video) -> None:
        events("started", video=video, pid=os.getpid())
        started = time.monotonic()
        try:
            result = restore_file(restorers, profiles, restorer.crop_size, video.source, video.output, options.blend,
                                  options.batch_size, progress=lambda done, total: frame_written(video, done))
            video.status, video.frames, video.faces_restored = "done", result["frames"], result["faces_restored"]
        except Exception as error:  # noqa: BLE001 - reported in the summary; the other videos go on
            video.status, video.reason = "failed", error_reason(error)
        video.seconds = time.monotonic() - started
        record(video)

    pool = ThreadPoolExecutor(max_workers=LOCAL_VIDEOS_IN_FLIGHT, thread_name_prefix="batch-video")
    try:
        for future in [pool.submit(one, video) for video in pending]:
            future.result()
    except BaseException:  # Ctrl+C, SIGTERM: the videos at work stop at their next frame, leaving nothing
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


# ------------------------------------------------------------------------------------------ Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BatchError(f"--ray needs Ray, which is not installed: {CLUSTER_EXTRA}") from None
    return ray


class BatchWorker:
    """A Ray actor: loads the model once from the shipped bundle and profile, then restores videos one at
    a time. Errors come back as one line; only a dead worker raises on the driver."""

    def __init__(self, bundle_files: dict, profile_bytes: dict, backend: str, device):
        from instantrestore.runtime import Profile, load_bundle

        from .engine import load_engine

        self._folder = tempfile.TemporaryDirectory(prefix="instantrestore-worker-")
        bundle_dir = Path(self._folder.name) / "bundle"
        bundle_dir.mkdir()
        for name, data in bundle_files.items():
            (bundle_dir / name).write_bytes(data)
        bundle = load_bundle(bundle_dir)
        self.profiles = {}
        for index, (name, data) in enumerate(profile_bytes.items()):
            path = bundle_dir.parent / f"profile{index}.safetensors"
            path.write_bytes(data)
            self.profiles[name] = Profile.load(path, bundle_id=bundle.bundle_id)
        restorer = load_engine(bundle, backend, device, None, progress=lambda message: None)
        self.restorers = {name: restorer.crop_restorer(profile) for name, profile in self.profiles.items()}
        self.crop_size = restorer.crop_size

    def pid(self) -> int:
        return os.getpid()

    def restore(self, in_path: str, out_path: str, blend: float, batch_size: int) -> dict:
        started = time.monotonic()
        try:
            result = restore_file(self.restorers, self.profiles, self.crop_size, in_path, out_path, blend, batch_size)
        except Exception as error:  # noqa: BLE001 - the driver reports it and goes on
            return {"error": error_reason(error), "seconds": time.monotonic() - started}
        return {**result, "seconds": time.monotonic() - started}


def _run_on_ray(options, bundle, profile_paths: dict, pending: list[Video], record, events) -> None:
    ray = _import_ray()
    running: dict = {}  # task -> (worker, video)
    started_here = not ray.is_initialized()
    if started_here:
        if options.ray == "local":
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        else:
            try:
                with warnings.catch_warnings():  # Ray Client warns, then raises: the error says it all
                    warnings.simplefilter("ignore")
                    ray.init(address=options.ray, logging_level="ERROR", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                reason = " ".join(str(error).split()).split(". ")[0]
                raise BatchError(f"cannot reach the Ray cluster {options.ray!r} ({reason}); start one (`ray start "
                                 "--head`) or give its address as --ray ray://HOST:10001") from None
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        workers = min(len(pending), options.jobs or max(1, gpus))
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        on = "a GPU each" if gpus else "CPUs (the cluster has no GPUs)"
        say(f"ray: {workers} worker{'s' if workers != 1 else ''} on {on}")
        # shipped once through the object store; every worker loads the model from it
        bundle_ref = ray.put({path.name: path.read_bytes() for path in Path(bundle.path).iterdir() if path.is_file()})
        profile_ref = ray.put({name: path.read_bytes() for name, path in profile_paths.items()})
        actor_class = ray.remote(max_restarts=0, **resources)(BatchWorker)
        device = options.device if gpus else (options.device or "cpu")

        def new_worker():
            actor = actor_class.remote(bundle_ref, profile_ref, options.backend, device)
            try:
                pid = ray.get(actor.pid.remote())
            except ray.exceptions.RayActorError as error:  # its model did not load: no worker would
                raise BatchError(f"a Ray worker could not load the model: {' '.join(str(error).split())[:300]}") from None
            events("worker", pid=pid)
            return actor, pid

        queue = collections.deque(pending)
        attempts: collections.Counter = collections.Counter()

        def submit(worker) -> None:
            video = queue.popleft()
            actor, pid = worker
            events("started", video=video, pid=pid)
            ref = actor.restore.remote(str(video.source), str(video.output), options.blend, options.batch_size)
            running[ref] = (worker, video)

        for _ in range(workers):
            submit(new_worker())
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, video = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                remove_partials(video.output)
                attempts[video.name] += 1
                if attempts[video.name] <= RAY_RETRIES:
                    say(f"a worker died while restoring {video.name}; retrying it on another")
                    queue.appendleft(video)
                else:
                    video.status = "failed"
                    video.reason = f"its worker died {attempts[video.name]} times ({type(error).__name__})"
                    record(video)
                ray.kill(worker[0])
                if queue:
                    submit(new_worker())
                continue
            video.seconds = result["seconds"]
            if "error" in result:
                video.status, video.reason = "failed", result["error"]
            else:
                video.status, video.frames, video.faces_restored = "done", result["frames"], result["faces_restored"]
            record(video)
            if queue:
                submit(worker)
    except BaseException:  # Ctrl+C, SIGTERM: stop the videos at work and remove what they were writing
        for (actor, _), _video in running.values():
            ray.kill(actor)
        if started_here:
            ray.shutdown()
            started_here = False
        for _, video in running.values():
            remove_partials(video.output)
        raise
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------- the command


def summary_table(videos: list[Video]) -> str:
    rows = [("video", "result", "frames", "faces restored", "seconds")]
    for v in videos:
        if v.status == "failed":
            rows.append((v.name, f"failed: {v.reason}", "", "", ""))
        else:
            seconds = f"{v.seconds:.1f}" if v.status == "done" else "-"
            rows.append((v.name, v.status, str(v.frames), str(v.faces_restored), seconds))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)), row[4]]).rstrip()
                     for row in rows)


def cmd_batch(args) -> int:
    ray = args.ray
    options = BatchOptions(inputs=args.inputs, out_dir=Path(args.output), profile=args.profile,
                           bundle=args.bundle, backend=args.backend, device=args.device, blend=args.blend,
                           batch_size=args.batch_size, ray=ray, jobs=args.jobs, force=args.force,
                           overwrite=args.overwrite)
    started = time.monotonic()
    restoring: list[float] = []  # from the first video started to the last finished: after the model loads

    def timing(kind, **info):
        if kind in ("started", "finished"):
            restoring.append(time.monotonic())

    videos = run_batch(options, events=timing)
    print(summary_table(videos))
    failed = [v for v in videos if v.status == "failed"]
    done = [v for v in videos if v.status == "done"]
    frames = sum(v.frames for v in done)
    elapsed = time.monotonic() - started
    rates = ""
    if done and len(restoring) > 1 and restoring[-1] > restoring[0]:
        busy = restoring[-1] - restoring[0]
        rates = (f"; {len(done) / busy:.2f} videos/s, {frames / busy:.1f} frames/s once the model was loaded "
                 f"({elapsed - busy:.1f} s of start-up)")
    say(f"{len(done)} restored ({frames} frames in {elapsed:.1f} s{rates}), "
        f"{sum(v.status == 'skipped' for v in videos)} already done, {len(failed)} failed")
    return 2 if failed else 0


def register(commands) -> None:
    from .cli import _common_model_options as add_model_options
    from .cli import add_profile_option

    batch = commands.add_parser("batch", help="restore many recordings, resumable; on this machine or a Ray cluster")
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders of videos, or .txt lists")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="the folder to write into")
    add_profile_option(batch)
    batch.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on Ray: alone, a local Ray runtime; `auto` or ray://HOST:PORT, a running cluster "
                            f"(inputs and outputs on storage every node sees; needs {CLUSTER_EXTRA})")
    batch.add_argument("--jobs", type=int, help="with --ray: how many workers (default: one per GPU of the cluster, "
                                                "or 1 without GPUs)")
    batch.add_argument("--force", action="store_true", help="restore every video again, even those already done")
    batch.add_argument("--overwrite", action="store_true",
                       help="replace files at the output paths that this batch did not write (default: refuse)")
    batch.add_argument("--batch-size", type=int, default=1, help="frames per restorer call (default 1)")
    batch.add_argument("--blend", type=float, default=1.0, help="strength of the restored face, 0..1 (default 1)")
    add_model_options(batch)
    batch.set_defaults(run=cmd_batch)
