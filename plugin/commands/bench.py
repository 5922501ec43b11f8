"""`instantrestore bench`: how fast the restore step and the whole frame pipeline run on this machine.

Model mode times encode, UNet, decode and the whole restore step (eager, and on CUDA as one CUDA graph),
the authors' per-image structure (references enrolled again for every image) for the ratio, enrollment,
and peak GPU memory. Pipeline mode times decode, track, restore, composite and encode on a synthetic
1080p clip. Soak mode runs the live runner in real time for minutes and reports dropped frames, latency
and resident memory over the run (a leak shows as growth). Figures are medians after warm-up; `--json`
prints one JSON object on standard output (the report then goes to standard error). The measurements
themselves: benchmarks.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from instantrestore.runtime.backends import BACKENDS, CHOICES, backend_class

from .. import home
from ..benchmarks import StandIn, bench_model, bench_pipeline, bench_soak, random_bundle
from ..errors import PluginError
from ..progress import TERMINAL, Progress
from . import Outcome

NAME = "bench"
SUMMARY = "measure the restore step and the frame pipeline"
DESCRIPTION = ("Measure the restore step and its parts, or with --pipeline the whole frame pipeline on a synthetic "
               "1080p clip, naming the device that produced the figures.")
EXAMPLES = ("instantrestore bench --random sd-turbo", "instantrestore bench --pipeline --stand-in-ms 10")

FRAMES_DEFAULT, SOAK_FRAMES_DEFAULT = 30, 14_400


@dataclasses.dataclass
class Options:
    """What `bench` was asked: the model (a bundle, or random weights of a known architecture; backend, device,
    dtype, torch.compile where the backend compiles), the sizes (references, batch, timed frames: default 30, or
    14,400 in --soak mode), the mode (model, --pipeline or --soak; stand_in_ms: a stand-in instead of the model)
    and whether to print JSON."""

    bundle: Optional[str] = None
    random: Optional[str] = None
    backend: str = "torch"
    device: Optional[str] = None
    dtype: Optional[str] = None
    refs: int = 4
    batch: int = 1
    frames: Optional[int] = None
    compile: bool = False
    pipeline: bool = False
    soak: bool = False
    stand_in_ms: Optional[float] = None
    json: bool = False

    def __post_init__(self):
        if self.soak and self.pipeline:
            raise PluginError("--soak and --pipeline are two benchmarks; give one")
        if self.bundle and self.random:
            raise PluginError("--bundle and --random name two models; give one")
        if self.frames is None:
            self.frames = SOAK_FRAMES_DEFAULT if self.soak else FRAMES_DEFAULT
        if self.refs < 1 or self.batch < 1 or self.frames < 1:
            raise PluginError("--refs, --batch and --frames must be at least 1")
        if self.stand_in_ms is not None:
            if not (self.pipeline or self.soak) or self.bundle or self.random:
                raise PluginError("--stand-in-ms replaces the model in --pipeline or --soak mode; drop --bundle/--random")
            if not 0 <= self.stand_in_ms <= 10_000:
                raise PluginError(f"--stand-in-ms must be within 0..10000, got {self.stand_in_ms:g}")
        if self.compile and compile_option(self.backend) is None:
            compiling = [name for name in BACKENDS if compile_option(name)]
            raise PluginError(f"--compile: the {self.backend} backend has nothing to compile (it applies to "
                              f"--backend {' or '.join(compiling) or 'none here'})")


def compile_option(backend: str) -> Optional[str]:
    """The backend's load option that compiles its model (torch: torch.compile), read from the registry."""
    return None if backend == "auto" else backend_class(backend).compile_option


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bundle", help="model bundle folder (default: the last exported bundle)")
    source.add_argument("--random", choices=["sd-turbo", "tiny"], help="random weights of a known architecture")
    parser.add_argument("--backend", choices=CHOICES, help=f"inference backend (default {Options.backend})")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--dtype", choices=["float16", "float32"], help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--refs", type=int, help=f"reference photos enrolled (default {Options.refs})")
    parser.add_argument("--batch", type=int, help=f"frames per restore call (default {Options.batch})")
    parser.add_argument("--frames", type=int,
                        help=f"timed repetitions (frames in --pipeline mode; default {FRAMES_DEFAULT}, --soak: "
                             f"{SOAK_FRAMES_DEFAULT})")
    parser.add_argument("--compile", action="store_true",
                        help="compile the model where the backend can (torch: torch.compile under the CUDA graph)")
    parser.add_argument("--pipeline", action="store_true", help="time the whole pipeline on a synthetic 1080p clip")
    parser.add_argument("--soak", action="store_true",
                        help="run the live runner in real time on a looped 720p clip (--frames, default 14400: 8 "
                             "minutes at 30 fps) and report dropped frames, latency and memory over time")
    parser.add_argument("--stand-in-ms", type=float, metavar="MS",
                        help="--pipeline or --soak without the model: a stand-in waits MS per face as a GPU call would")
    parser.add_argument("--json", action="store_true", help="print one JSON object on standard output")


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """The benchmark asked for; the Outcome's lines are the report (or the JSON object, the report then said
    through progress), its value the figures."""
    restorer = None if options.stand_in_ms is not None else load_model(options, progress)
    stand_in = StandIn(options.stand_in_ms if options.stand_in_ms is not None else StandIn.ms_per_face)
    if options.soak:
        result = bench_soak(restorer, frames=options.frames, stand_in=stand_in, progress=progress)
    elif options.pipeline:
        result = bench_pipeline(restorer, frames=options.frames, batch=options.batch, stand_in=stand_in)
    else:
        result = bench_model(restorer, refs=options.refs, batch=options.batch, frames=options.frames)
    report = format_report(result)
    if not options.json:
        return Outcome(report, value=result)
    for line in report:
        progress(line)
    return Outcome([json.dumps(result)], value=result)


def load_model(options: Options, progress):
    """The restorer to time: the bundle (default: the default one) or cached random weights, on the backend
    asked for, built first where that backend needs it."""
    import torch

    from ..engine import load_engine
    from instantrestore.runtime import load_bundle

    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError("--device cuda: no CUDA GPU is visible to PyTorch")
    dtype = options.dtype or ("float16" if device.type == "cuda" else "float32")
    if options.random:
        bundle = load_bundle(random_bundle(options.random, dtype, device, progress))
    else:
        bundle = home.resolve_bundle(options.bundle)
    progress(f"loading {bundle.path} on {device} ({options.backend}, {dtype})")
    compiling = {compile_option(options.backend): True} if options.compile else {}
    return load_engine(bundle, options.backend, device.type, dtype, progress, **compiling)


LABELS = {
    "encode_ms": "VAE encode", "unet_ms": "UNet (shared attention)", "decode_ms": "VAE decode",
    "restore_ms": "restore step, no CUDA graph", "restore_graph_ms": "restore step, CUDA graph",
    "authors_per_image_ms": "authors' per-image structure", "enroll_ms": "enroll references",
    "mean_latency_ms": "latency capture to sink, mean", "p95_latency_ms": "latency capture to sink, p95",
    "max_latency_ms": "latency capture to sink, max",
}
UNITS = (("fps", "frames/s"), ("speedup_vs_authors_structure", "x"), ("kv_mb", "MB of K/V"),
         ("peak_gpu_mb", "MB peak GPU memory"), ("sent", "frames sent"), ("dropped", "frames dropped"),
         ("repeated", "frames repeated"), ("seconds", "s"), ("rss_settled_mb", "MB resident after warm-up"),
         ("rss_end_mb", "MB resident at the end"), ("rss_max_mb", "MB resident at most"),
         ("rss_growth_mb", "MB growth after warm-up"))


def format_report(result: dict) -> list[str]:
    """The figures as the terminal shows them: what ran where, then one line per figure with its unit."""
    head = ", ".join(f"{k} {result[k]}" for k in ("device", "backend", "dtype", "batch", "refs", "crop", "size", "frames")
                     if k in result)
    lines = [head]
    for key, value in result.items():
        if key.endswith("_ms"):
            label = LABELS.get(key, key[:-3].replace("stage_", "pipeline: "))
            lines.append(f"  {label:34s} {value:9.2f} ms")
    lines += [f"  {key:34s} {result[key]:9.2f} {unit}" for key, unit in UNITS if key in result]
    return lines
