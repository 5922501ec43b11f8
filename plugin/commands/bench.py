"""`instantrestore bench`: how fast the restore step and the whole frame pipeline run on this machine.

Model mode times encode, UNet, decode and the whole restore step (eager, and on CUDA as one CUDA graph),
the authors' per-image structure (references enrolled again for every image) for the ratio, enrollment,
and peak GPU memory. Pipeline mode times decode, track, restore, composite and encode on a synthetic
1080p clip. Soak mode runs the live runner in real time for minutes and reports dropped frames, latency
and resident memory over the run (a leak shows as growth). Figures are medians after warm-up; `--json`
prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from instantrestore.runtime import load_bundle, load_restorer
from instantrestore.runtime.backends import CHOICES
from instantrestore.runtime.network import restore_noise

from . import home
from .errors import PluginError
from .progress import say


FRAMES_DEFAULT, SOAK_FRAMES_DEFAULT = 30, 14_400


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


def bench_restorer(restorer, stand_in_ms: float, crop_size: int) -> tuple:
    """(restore callable, crop size, report labels): the restorer with the test face enrolled, or without one
    the stand-in that waits `stand_in_ms` per face."""
    from instantrestore.runtime.align import find_faces

    if restorer is None:
        labels = {"device": device_name(torch.device("cpu")), "backend": f"stand-in ({stand_in_ms:g} ms per face)"}
        return stand_in_restorer(stand_in_ms), crop_size, labels
    crops = find_faces(bench_face(), restorer.crop_size)
    if not crops:
        raise ValueError("the benchmark's test face was not detected")
    labels = {"device": device_name(restorer.device), "backend": restorer.backend.name}
    return restorer.crop_restorer(restorer.enroll_crops(crops[0].crop[None])), restorer.crop_size, labels


def bench_pipeline(restorer=None, frames: int = 120, batch: int = 1, size=(1920, 1080), stand_in_ms: float = 10.0,
                   crop_size: int = 512) -> dict:
    """The whole frame pipeline on a synthetic clip: per-stage medians and end-to-end frames per second.
    Without a restorer, a stand-in that waits `stand_in_ms` per face takes the model's place."""
    from instantrestore.runtime.media import FileSink, FileSource
    from instantrestore.runtime.frames.file_run import run_file
    from instantrestore.runtime.frames.pipeline import FramePipeline

    with tempfile.TemporaryDirectory(prefix="instantrestore-bench-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        synthetic_clip(clip, frames, size)
        restore_crops, crop_size, labels = bench_restorer(restorer, stand_in_ms, crop_size)
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


def bench_soak(restorer=None, frames: int = 14_400, size=(1280, 720), fps: float = 30.0, stand_in_ms: float = 10.0,
               crop_size: int = 512, progress=None) -> dict:
    """The live runner for `frames` frames in real time (14,400 = 8 minutes at 30 fps) on a looped clip of a
    real face: frames sent, dropped and repeated, latency, and resident memory sampled every second. The
    growth is measured from the end of the first tenth (after warm-up) to the end: a leak shows as growth
    in proportion to the run's length."""
    from instantrestore.runtime.media import MemorySource
    from instantrestore.runtime.frames.live_run import LiveOptions, run_live
    from instantrestore.runtime.frames.pipeline import FramePipeline

    width, height = size
    clip = list(synthetic_frames(int(fps) * 4, size))  # four seconds of a head moving a little, as on a call
    restore_crops, crop_size, labels = bench_restorer(restorer, stand_in_ms, crop_size)
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


LABELS = {
    "encode_ms": "VAE encode", "unet_ms": "UNet (shared attention)", "decode_ms": "VAE decode",
    "restore_ms": "restore step, no CUDA graph", "restore_graph_ms": "restore step, CUDA graph",
    "authors_per_image_ms": "authors' per-image structure", "enroll_ms": "enroll references",
    "mean_latency_ms": "latency capture to sink, mean", "p95_latency_ms": "latency capture to sink, p95",
    "max_latency_ms": "latency capture to sink, max",
}


def format_report(result: dict) -> str:
    head = ", ".join(f"{k} {result[k]}" for k in ("device", "backend", "dtype", "batch", "refs", "crop", "size", "frames")
                     if k in result)
    lines = [head]
    for key, value in result.items():
        if key.endswith("_ms"):
            label = LABELS.get(key, key[:-3].replace("stage_", "pipeline: "))
            lines.append(f"  {label:34s} {value:9.2f} ms")
    for key, unit in (("fps", "frames/s"), ("speedup_vs_authors_structure", "x"), ("kv_mb", "MB of K/V"),
                      ("peak_gpu_mb", "MB peak GPU memory"), ("sent", "frames sent"), ("dropped", "frames dropped"),
                      ("repeated", "frames repeated"), ("seconds", "s"), ("rss_settled_mb", "MB resident after warm-up"),
                      ("rss_end_mb", "MB resident at the end"), ("rss_max_mb", "MB resident at most"),
                      ("rss_growth_mb", "MB growth after warm-up")):
        if key in result:
            lines.append(f"  {key:34s} {result[key]:9.2f} {unit}")
    return "\n".join(lines)


def register(commands) -> None:
    bench = commands.add_parser("bench", help="measure the restore step and the frame pipeline")
    source = bench.add_mutually_exclusive_group()
    source.add_argument("--bundle", help="model bundle folder (default: the last exported bundle)")
    source.add_argument("--random", choices=["sd-turbo", "tiny"], help="random weights of a known architecture")
    bench.add_argument("--backend", default="torch", choices=CHOICES)
    bench.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    bench.add_argument("--dtype", choices=["float16", "float32"], help="default: float16 on cuda, float32 on cpu")
    bench.add_argument("--refs", type=int, default=4)
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--frames", type=int, default=FRAMES_DEFAULT,
                       help=f"timed repetitions (frames in --pipeline mode; --soak: {SOAK_FRAMES_DEFAULT})")
    bench.add_argument("--compile", action="store_true", help="torch backend: torch.compile under the CUDA graph")
    bench.add_argument("--pipeline", action="store_true", help="time the whole pipeline on a synthetic 1080p clip")
    bench.add_argument("--soak", action="store_true",
                       help="run the live runner in real time on a looped 720p clip (--frames, default 14400: 8 "
                            "minutes at 30 fps) and report dropped frames, latency and memory over time")
    bench.add_argument("--stand-in-ms", type=float, metavar="MS",
                       help="--pipeline or --soak without the model: a stand-in waits MS per face as a GPU call would")
    bench.add_argument("--json", action="store_true", help="print one JSON object last")
    bench.set_defaults(run=run)


def run(args) -> int:
    if args.soak and args.pipeline:
        raise PluginError("--soak and --pipeline are two benchmarks; give one")
    soak_frames = args.frames if args.frames != FRAMES_DEFAULT else SOAK_FRAMES_DEFAULT
    if args.stand_in_ms is not None:
        if not (args.pipeline or args.soak) or args.bundle or args.random:
            raise PluginError("--stand-in-ms replaces the model in --pipeline or --soak mode; drop --bundle/--random")
        if not 0 <= args.stand_in_ms <= 10_000 or args.batch < 1 or args.frames < 1:
            raise PluginError("--stand-in-ms must be within 0..10000, --batch and --frames at least 1")
        if args.soak:
            return _report(bench_soak(None, frames=soak_frames, stand_in_ms=args.stand_in_ms, progress=say), args.json)
        result = bench_pipeline(None, frames=args.frames, batch=args.batch, stand_in_ms=args.stand_in_ms)
        return _report(result, args.json)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError("--device cuda: no CUDA GPU is visible to PyTorch")
    if args.refs < 1 or args.batch < 1 or args.frames < 1:
        raise PluginError("--refs, --batch and --frames must be at least 1")
    dtype = args.dtype or ("float16" if device.type == "cuda" else "float32")
    if args.random:
        bundle = load_bundle(random_bundle(args.random, dtype, device, say))
    else:
        bundle = home.resolve_bundle(args.bundle)
    say(f"loading {bundle.path} on {device} ({args.backend}, {dtype})")
    if args.backend == "torch":
        restorer = load_restorer(bundle.path, backend="torch", device=device, dtype=dtype, compile=args.compile)
    else:  # builds the ONNX graphs or TensorRT engines first when they are missing
        from .engine import load_engine

        restorer = load_engine(bundle, args.backend, device.type, dtype)
    if args.soak:
        result = bench_soak(restorer, frames=soak_frames, progress=say)
    elif args.pipeline:
        result = bench_pipeline(restorer, frames=args.frames, batch=args.batch)
    else:
        result = bench_model(restorer, refs=args.refs, batch=args.batch, frames=args.frames)
    return _report(result, args.json)


def _report(result: dict, as_json: bool) -> int:
    print(format_report(result), file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps(result))
    return 0
