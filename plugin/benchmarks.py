"""What `instantrestore bench` measures: the restore step and its parts (model mode), the whole frame pipeline on
a synthetic 1080p clip (--pipeline), and the live runner in real time for minutes (--soak), with the synthetic
scenes of a real face they run on and the stand-in that takes the model's place without one."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from instantrestore.runtime.network import restore_noise

from . import home
from .errors import PluginError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, frames: int, warmup: int) -> float:
    """Median wall time of fn() in ms, the device synchronised around each call (works for every
    backend, whatever stream it runs on)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def random_bundle(kind: str, dtype: str, device, progress) -> Path:
    """A cached random-weight bundle of a known architecture (no download)."""
    from instantrestore.export.random_bundle import write_random_bundle

    folder = home.state_dir() / "bench" / f"random-{kind}-{dtype}"
    if (folder / "config.json").is_file():
        return folder
    return write_random_bundle(kind, folder, dtype=dtype, device=device, progress=progress)


def bench_model(restorer, refs: int = 4, batch: int = 1, frames: int = 30, warmup: int = 3) -> dict:
    """The restore step's figures for one bundle and backend."""
    device, backend = restorer.device, restorer.backend
    size = restorer.crop_size
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device, backend.dtype)
    references = (torch.rand(refs, 3, size, size, generator=generator) * 2 - 1).to(device, backend.dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"device": device_name(device), "backend": backend.name, "dtype": str(backend.dtype).split(".")[-1],
              "batch": batch, "refs": refs, "crop": size, "frames": frames}

    few = max(3, frames // 5)
    result["enroll_ms"] = median_ms(lambda: restorer.enroll(references), device, few, 1)
    profile = restorer.enroll(references)
    inputs = restorer.layer_inputs(profile)
    result["kv_mb"] = sum(t.numel() * t.element_size() for t in inputs) / 1e6

    net = getattr(backend, "restorer_net", None)
    if net is not None:  # torch: each part on its own, eagerly
        noise = restore_noise(batch, restorer.latent_shape).to(device, backend.dtype)
        with torch.inference_mode():
            latents = net.noisy_latents(images, noise)
            result["encode_ms"] = median_ms(lambda: net.noisy_latents(images, noise), device, frames, warmup)
            net.bind_references(inputs)
            try:
                result["unet_ms"] = median_ms(lambda: net.run_unet(latents), device, frames, warmup)
            finally:
                net.bind_references(None)
            result["decode_ms"] = median_ms(lambda: net.decode(latents), device, frames, warmup)

    graph = getattr(backend, "cuda_graph", False)
    if graph:
        backend.cuda_graph = False
    try:
        result["restore_ms"] = median_ms(lambda: restorer.restore(images, profile), device, frames, warmup)
        result["authors_per_image_ms"] = median_ms(lambda: restorer.restore(images, references), device, few, 1)
    finally:
        backend.cuda_graph = graph
    if graph:
        result["restore_graph_ms"] = median_ms(lambda: restorer.restore(images, profile), device, frames, warmup)
    best = min(result["restore_ms"], result.get("restore_graph_ms", float("inf")))
    result["fps"] = 1000.0 * batch / best
    result["speedup_vs_authors_structure"] = result["authors_per_image_ms"] / best
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
    return result


def bench_face() -> np.ndarray:
    """scikit-image's astronaut: a real face photo for the synthetic clips and their enrollment."""
    try:
        from skimage.data import astronaut
    except ImportError:
        raise PluginError("the pipeline benchmarks need scikit-image for their test face: pip install scikit-image") from None
    return astronaut()


def synthetic_frames(count: int, size=(1920, 1080)):
    """`count` frames of the test face, head and shoulders filling the frame's height as in a video call,
    drifting over a gradient background."""
    import cv2

    width, height = size
    side = height * 5 // 6
    photo = cv2.resize(bench_face()[:320, 90:410], (side, side), interpolation=cv2.INTER_CUBIC)
    background = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for i in range(count):
        frame = background.astype(np.uint8)
        x = width // 2 - side // 2 + int(40 * np.sin(i / 15))
        y = (height - side) // 2 + int(20 * np.cos(i / 20))
        frame[y:y + side, x:x + side] = photo
        yield frame


def synthetic_clip(path: Path, frames: int, size=(1920, 1080), fps: int = 30) -> None:
    """synthetic_frames encoded into a clip at `path`."""
    from instantrestore.runtime.media import FileSink

    with FileSink(path, fps=fps, size=size) as sink:
        for i, frame in enumerate(synthetic_frames(frames, size)):
            sink.write(frame, i / fps)


def stand_in_restorer(ms_per_face: float):
    """A restore callable that returns the crops unchanged after waiting `ms_per_face` per face with the
    GIL released, as a call into a GPU does: the pipeline around the model measured without one."""

    def restore_crops(crops: np.ndarray) -> np.ndarray:
        time.sleep(ms_per_face / 1000.0 * len(crops))
        return crops.copy()

    return restore_crops


@dataclasses.dataclass(frozen=True)
class StandIn:
    """What takes the model's place in --pipeline and --soak without one: a wait of `ms_per_face` per face, on
    crops of `crop_size`."""

    ms_per_face: float = 10.0
    crop_size: int = 512


def bench_restorer(restorer, stand_in: StandIn) -> tuple:
    """(restore callable, crop size, report labels): the restorer with the test face enrolled, or without one
    the stand-in."""
    from instantrestore.runtime.align import find_faces

    if restorer is None:
        labels = {"device": device_name(torch.device("cpu")),
                  "backend": f"stand-in ({stand_in.ms_per_face:g} ms per face)"}
        return stand_in_restorer(stand_in.ms_per_face), stand_in.crop_size, labels
    crops = find_faces(bench_face(), restorer.crop_size)
    if not crops:
        raise ValueError("the benchmark's test face was not detected")
    labels = {"device": device_name(restorer.device), "backend": restorer.backend.name}
    return restorer.crop_restorer(restorer.enroll_crops(crops[0].crop[None])), restorer.crop_size, labels


def bench_pipeline(restorer=None, frames: int = 120, batch: int = 1, size=(1920, 1080),
                   stand_in: StandIn = StandIn()) -> dict:
    """The whole frame pipeline on a synthetic clip: per-stage medians and end-to-end frames per second.
    Without a restorer, the stand-in takes the model's place."""
    from instantrestore.runtime.media import FileSink, FileSource
    from instantrestore.runtime.frames.file_run import run_file
    from instantrestore.runtime.frames.pipeline import FramePipeline

    with tempfile.TemporaryDirectory(prefix="instantrestore-bench-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        synthetic_clip(clip, frames, size)
        restore_crops, crop_size, labels = bench_restorer(restorer, stand_in)
        source = FileSource(clip)
        with FramePipeline(restore_crops, crop_size) as pipeline:
            start = time.perf_counter()
            stats = run_file(pipeline, source, FileSink(Path(tmp) / "out.mp4", like=source), batch_size=batch)
            wall = time.perf_counter() - start
    summary = stats.summary()
    stages = {f"stage_{name}_ms": values["p50_ms"] for name, values in summary["stages"].items()}
    return {**labels, "frames": frames, "size": f"{size[0]}x{size[1]}", "batch": batch, **stages,
            "fps": frames / wall, "no_face_frames": summary.get("no_face", 0)}


class CountingSink:
    """Where the soak's frames go: counted, not kept."""

    def __init__(self):
        self.count = 0

    def write(self, image, timestamp=None):
        self.count += 1

    def close(self):
        pass

    abort = close


def resident_mb() -> float | None:
    """This process's resident memory now (Linux), None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def bench_soak(restorer=None, frames: int = 14_400, size=(1280, 720), fps: float = 30.0,
               stand_in: StandIn = StandIn(), progress=None) -> dict:
    """The live runner for `frames` frames in real time (14,400 = 8 minutes at 30 fps) on a looped clip of a
    real face: frames sent, dropped and repeated, latency, and resident memory sampled every second. The
    growth is measured from the end of the first tenth (after warm-up) to the end: a leak shows as growth
    in proportion to the run's length."""
    from instantrestore.runtime.media import MemorySource
    from instantrestore.runtime.frames.live_run import LiveOptions, run_live
    from instantrestore.runtime.frames.pipeline import FramePipeline

    width, height = size
    clip = list(synthetic_frames(int(fps) * 4, size))  # four seconds of a head moving a little, as on a call
    restore_crops, crop_size, labels = bench_restorer(restorer, stand_in)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample():
        started = time.monotonic()
        while not done.wait(1.0):
            rss = resident_mb()
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
                if progress and len(samples) % 30 == 0:
                    progress(f"soak: {samples[-1][0]:.0f} s, resident memory {rss:.1f} MB")

    sampler = threading.Thread(target=sample, name="instantrestore-soak-memory", daemon=True)
    sink = CountingSink()
    with FramePipeline(restore_crops, crop_size) as pipeline:
        sampler.start()
        try:
            report = run_live(pipeline, MemorySource(clip, fps, total=frames), sink, LiveOptions(max_frames=frames))
        finally:
            done.set()
            sampler.join()
    result = {**labels, "frames": frames, "size": f"{width}x{height}", "fps_target": fps,
              "sent": report.sent, "dropped": report.dropped, "repeated": report.repeated,
              "seconds": report.duration_s, "mean_latency_ms": 1000 * report.mean_latency_s,
              "p95_latency_ms": 1000 * report.p95_latency_s, "max_latency_ms": 1000 * report.max_latency_s}
    if len(samples) >= 2:
        settled = samples[len(samples) // 10]
        result.update(rss_settled_mb=settled[1], rss_end_mb=samples[-1][1], rss_max_mb=max(m for _, m in samples),
                      rss_growth_mb=samples[-1][1] - settled[1])
    return result
