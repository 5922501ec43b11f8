"""`instantrestore export`: the authors' weights into a model bundle (the new default), and what the ONNX Runtime
and TensorRT backends run on, built into the state folder's engine cache where every command looks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from instantrestore.export.checkpoint import DEFAULT_CHECKPOINT

from .. import home
from ..progress import TERMINAL, Progress
from . import Outcome
from .bundles import default_name, make_default

NAME = "export"
SUMMARY = "get the authors' weights into a model bundle; build ONNX/TensorRT"
DESCRIPTION = ("Fetch the authors' checkpoint from the hub (or take a local one), merge its LoRA weights into a model "
               "bundle, and optionally export its ONNX graphs and build TensorRT engines for this GPU. The new bundle "
               "becomes every command's default (`instantrestore bundles` switches back); work already cached is "
               "skipped. Offline: --checkpoint FILE --base DIR --vae DIR, downloaded where the hub is reachable.")
EXAMPLES = ("instantrestore export",
            "instantrestore export --checkpoint weights/final_model_ckpt.pt",
            "instantrestore export --checkpoint hwdz15508/InstantRestore/adain_ablation_ckpt.pt",
            "instantrestore export --onnx --tensorrt")


@dataclasses.dataclass
class Options:
    """What `export` was asked. checkpoint None: the authors' release, unless only --onnx/--tensorrt are asked for
    an existing bundle (`bundle`, default the default one). dtype: the bundle's (default float16) and the ONNX
    graphs' (default float16 with a GPU, float32 without); TensorRT engines are always fp16."""

    checkpoint: Optional[str] = None
    base: str = "stabilityai/sd-turbo"
    vae: str = "stabilityai/sd-vae-ft-mse"
    out: Optional[str] = None
    dtype: Optional[str] = None
    onnx: bool = False
    tensorrt: bool = False
    bundle: Optional[str] = None

    def __post_init__(self):
        if self.checkpoint is None and not (self.onnx or self.tensorrt):
            self.checkpoint = DEFAULT_CHECKPOINT  # the authors' release, fetched from the hub


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", metavar="FILE|OWNER/REPO/FILE",
                        help=f"a local checkpoint, or a file on the hub (default: {DEFAULT_CHECKPOINT}; the same repo "
                             "has base_ablation_ckpt.pt, adain_ablation_ckpt.pt and lmattn_ablation_ckpt.pt)")
    parser.add_argument("--base", help=f"the base model: hub id or local diffusers folder (default: {Options.base})")
    parser.add_argument("--vae", help=f"the VAE: hub id or local diffusers folder (default: {Options.vae})")
    parser.add_argument("--out", help="bundle folder to write (default: bundles/<checkpoint>-<dtype> in the state "
                                      "folder); an existing folder is replaced only if it is a bundle")
    parser.add_argument("--dtype", choices=["float16", "float32"],
                        help="precision of the bundle (default float16) and of ONNX graphs (default: float16 with a "
                             "GPU, float32 without)")
    parser.add_argument("--onnx", action="store_true", help="also export the ONNX graphs (for onnxruntime, TensorRT)")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines for this GPU")
    parser.add_argument("--bundle", help="with --onnx/--tensorrt and no --checkpoint: the bundle to build on "
                                         "(default: the default bundle)")


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    home.read_settings()  # a corrupt settings file is reported now, not after minutes of export
    if options.tensorrt:  # no TensorRT or no GPU is said before minutes of import
        from instantrestore.runtime.backends import backend_class

        backend_class("tensorrt").require(None)
    if options.checkpoint is not None:
        bundle_dir = import_bundle(options, progress)
    else:
        bundle_dir = home.resolve_bundle(options.bundle).path
    built = build_for_backends(bundle_dir, options, progress)
    return Outcome([str(bundle_dir)], value={"bundle": bundle_dir, "built": built})


def import_bundle(options: Options, progress) -> Path:
    """The checkpoint merged into a bundle, which becomes the default (saying how to switch back)."""
    from instantrestore.export import import_checkpoint

    dtype = options.dtype or "float16"
    out = Path(options.out) if options.out else home.bundles_dir() / default_name(options.checkpoint, dtype)
    previous = home.last_bundle_dir()
    bundle_dir = import_checkpoint(checkpoint=options.checkpoint, base=options.base, vae=options.vae, out=out,
                                   dtype=dtype, progress=progress)
    make_default(bundle_dir, previous, progress)
    return bundle_dir


def build_for_backends(bundle_dir: Path, options: Options, progress) -> dict:
    """What `--backend onnxruntime` / `--backend tensorrt` will run on here, made into the state folder's engine
    cache, where every command looks (valid files already there are reused). Returns {label graph: path}."""
    stages = [("onnx", "onnxruntime", options.dtype)] if options.onnx else []
    stages += [("tensorrt", "tensorrt", None)] if options.tensorrt else []
    if not stages:
        return {}
    from instantrestore.export import make_for
    from instantrestore.runtime import load_bundle

    from ..engine import choose_engine

    bundle, built = load_bundle(bundle_dir), {}
    for label, backend, dtype in stages:
        made = make_for(bundle, choose_engine(bundle, backend, dtype=dtype), home.engines_dir(), progress=progress)
        for graph, path in made.items():
            progress(f"{label} {graph}: {path}")
            built[f"{label} {graph}"] = path
    return built
