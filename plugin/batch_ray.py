"""`batch --ray`: each worker (a Ray actor holding one GPU, or a CPU when the cluster has none) loads the model
once from the bundle and profile the driver ships it, and takes one video at a time; a worker that dies is
replaced and its video retried, its partial file removed."""

from __future__ import annotations

import collections
import os
import tempfile
import time
import warnings
from pathlib import Path

from . import home
from .batch_videos import BatchError, BatchWork, LoadedModel, Video, remove_partials, restore_file
from .messages import error_reason

RAY_RETRIES = 2  # a video whose worker died is tried this many more times
CLUSTER_EXTRA = 'pip install -e ".[cluster]" (from a checkout)'


def import_ray():
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
        profiles = {}
        for index, (name, data) in enumerate(profile_bytes.items()):
            path = bundle_dir.parent / f"profile{index}.safetensors"
            path.write_bytes(data)
            profiles[name] = Profile.load(path, bundle_id=bundle.bundle_id)
        restorer = load_engine(bundle, backend, device, None, progress=lambda message: None)
        self.model = LoadedModel({name: restorer.crop_restorer(profile) for name, profile in profiles.items()},
                                 profiles, restorer.crop_size)

    def pid(self) -> int:
        return os.getpid()

    def restore(self, video: Video, blend: float, batch_size: int) -> dict:
        started = time.monotonic()
        try:
            result = restore_file(self.model, video, blend, batch_size)
        except Exception as error:  # noqa: BLE001 - the driver reports it and goes on
            return {"error": error_reason(error), "seconds": time.monotonic() - started}
        return {**result, "seconds": time.monotonic() - started}


def connect(ray, address: str) -> None:
    """A local Ray runtime ("local"), or the running cluster at `address`; a cluster not there is one line."""
    if address == "local":
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        return
    try:
        with warnings.catch_warnings():  # Ray Client warns, then raises: the error says it all
            warnings.simplefilter("ignore")
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = " ".join(str(error).split()).split(". ")[0]
        raise BatchError(f"cannot reach the Ray cluster {address!r} ({reason}); start one (`ray start "
                         "--head`) or give its address as --ray ray://HOST:10001") from None


class RayRun:
    """The driver's side of one batch on Ray: the workers, the videos queued and those at work."""

    def __init__(self, ray, work: BatchWork):
        self.ray, self.work, self.options = ray, work, work.options
        self.record, self.events = work.record, work.events
        self.queue = collections.deque(work.pending)
        self.running: dict = {}  # task -> (worker, video)
        self.attempts: collections.Counter = collections.Counter()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.workers = min(len(work.pending), self.options.jobs or max(1, gpus))
        on = "a GPU each" if gpus else "CPUs (the cluster has no GPUs)"
        work.progress(f"ray: {self.workers} worker{'s' if self.workers != 1 else ''} on {on}")
        # shipped once through the object store; every worker loads the model from it
        self.bundle_ref = ray.put({path.name: path.read_bytes() for path in Path(work.bundle.path).iterdir()
                                   if path.is_file()})
        self.profile_ref = ray.put({name: home.profile_path(name).read_bytes() for name in work.profiles})
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        self.actor_class = ray.remote(max_restarts=0, **resources)(BatchWorker)
        self.device = self.options.device if gpus else (self.options.device or "cpu")

    def new_worker(self) -> tuple:
        actor = self.actor_class.remote(self.bundle_ref, self.profile_ref, self.options.backend, self.device)
        try:
            pid = self.ray.get(actor.pid.remote())
        except self.ray.exceptions.RayActorError as error:  # its model did not load: no worker would
            raise BatchError(f"a Ray worker could not load the model: {' '.join(str(error).split())[:300]}") from None
        self.events("worker", pid=pid)
        return actor, pid

    def submit(self, worker) -> None:
        video = self.queue.popleft()
        actor, pid = worker
        self.events("started", video=video, pid=pid)
        ref = actor.restore.remote(video, self.options.blend, self.options.batch_size)
        self.running[ref] = (worker, video)

    def run(self) -> None:
        ray = self.ray
        for _ in range(self.workers):
            self.submit(self.new_worker())
        while self.running:
            ready, _ = ray.wait(list(self.running), num_returns=1)
            worker, video = self.running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                self.worker_died(worker, video, error)
                continue
            video.seconds = result["seconds"]
            if "error" in result:
                video.status, video.reason = "failed", result["error"]
            else:
                video.status, video.frames, video.faces_restored = "done", result["frames"], result["faces_restored"]
            self.record(video)
            if self.queue:
                self.submit(worker)

    def worker_died(self, worker, video: Video, error: BaseException) -> None:
        """Its video is tried again on a new worker, up to RAY_RETRIES times."""
        remove_partials(video.output)
        self.attempts[video.name] += 1
        if self.attempts[video.name] <= RAY_RETRIES:
            self.work.progress(f"a worker died while restoring {video.name}; retrying it on another")
            self.queue.appendleft(video)
        else:
            video.status = "failed"
            video.reason = f"its worker died {self.attempts[video.name]} times ({type(error).__name__})"
            self.record(video)
        self.ray.kill(worker[0])
        if self.queue:
            self.submit(self.new_worker())

    def stop(self) -> None:
        """Ctrl+C, SIGTERM: stop the videos at work (the caller shuts Ray down), then remove what they wrote."""
        for (actor, _), _video in self.running.values():
            self.ray.kill(actor)


def run_on_ray(work: BatchWork) -> None:
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        connect(ray, work.options.ray)
    run = None
    try:
        run = RayRun(ray, work)
        run.run()
    except BaseException:
        if run is not None:
            run.stop()
        if started_here:
            ray.shutdown()
            started_here = False
        for _, video in (run.running.values() if run is not None else ()):
            remove_partials(video.output)
        raise
    finally:
        if started_here:
            ray.shutdown()
