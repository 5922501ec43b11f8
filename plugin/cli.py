"""Command line entry point: `instantrestore <command>`.

Each subcommand is added by a `register(commands)` function that creates its parser and sets
`run=` to a function taking the parsed arguments and returning the exit code. The built-in ones are
below; other modules of this package join through COMMAND_MODULES (one line each).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

from instantrestore.runtime.errors import InstantRestoreError

from .arguments import add_model_options, add_profile_option
from .errors import PluginError
from .messages import DEBUG_ENV, error_line
from .progress import quiet_when_the_reader_leaves, say
from .quiet import filtered_native_stderr

# Modules of this package with their own `register(commands)` (e.g. "bench" for plugin/bench.py).
COMMAND_MODULES = ("bundles", "batch", "doctor", "bench", "ui", "demo")


# ------------------------------------------------------------------------------------------------
# export


def cmd_export(args) -> int:
    from . import bundles, home

    home.read_settings()  # a corrupt settings file is reported now, not after minutes of export
    if args.tensorrt:  # no TensorRT or no GPU is said before minutes of import
        from instantrestore.runtime.backends import backend_class

        backend_class("tensorrt").require(None)
    checkpoint = args.checkpoint
    if checkpoint is None and not (args.onnx or args.tensorrt):
        from instantrestore.export.checkpoint import DEFAULT_CHECKPOINT

        checkpoint = DEFAULT_CHECKPOINT  # the authors' release, fetched from the hub
    if checkpoint is not None:
        from instantrestore.export import import_checkpoint

        dtype = args.dtype or "float16"
        out = Path(args.out) if args.out else home.bundles_dir() / bundles.default_name(checkpoint, dtype)
        previous = home.last_bundle_dir()
        bundle_dir = import_checkpoint(checkpoint=checkpoint, base=args.base, vae=args.vae, out=out, dtype=dtype,
                                       progress=say)
        bundles.make_default(bundle_dir, previous)
    else:
        bundle_dir = home.resolve_bundle(args.bundle).path
    # What `--backend onnxruntime` / `--backend tensorrt` will run on here, made into the state folder's engine
    # cache, where every command looks: graphs in --dtype (default: fp16 with a GPU, fp32 without), fp16 engines.
    stages = [("onnx", "onnxruntime", args.dtype)] if args.onnx else []
    stages += [("tensorrt", "tensorrt", None)] if args.tensorrt else []
    if stages:
        from instantrestore.export import make_for
        from instantrestore.runtime import load_bundle

        from .engine import choose_engine

        bundle = load_bundle(bundle_dir)
        for label, backend, dtype in stages:
            made = make_for(bundle, choose_engine(bundle, backend, dtype=dtype), home.engines_dir(), progress=say)
            for graph, path in made.items():
                say(f"{label} {graph}: {path}")
    print(bundle_dir)
    return 0


def register_export(commands) -> None:
    from instantrestore.export.checkpoint import DEFAULT_CHECKPOINT

    export = commands.add_parser("export", help="get the authors' weights into a model bundle; build ONNX/TensorRT")
    export.add_argument("--checkpoint", metavar="FILE|OWNER/REPO/FILE",
                        help=f"a local checkpoint, or a file on the hub (default: {DEFAULT_CHECKPOINT}; the same repo "
                             "has base_ablation_ckpt.pt, adain_ablation_ckpt.pt and lmattn_ablation_ckpt.pt)")
    export.add_argument("--base", default="stabilityai/sd-turbo",
                        help="the base model: hub id or local diffusers folder (default: %(default)s)")
    export.add_argument("--vae", default="stabilityai/sd-vae-ft-mse",
                        help="the VAE: hub id or local diffusers folder (default: %(default)s)")
    export.add_argument("--out", help="bundle folder to write (default: bundles/<checkpoint>-<dtype> in the state "
                                      "folder); an existing folder is replaced only if it is a bundle")
    export.add_argument("--dtype", choices=["float16", "float32"],
                        help="precision of the bundle (default float16) and of ONNX graphs (default: float16 with a "
                             "GPU, float32 without)")
    export.add_argument("--onnx", action="store_true", help="also export the ONNX graphs (for onnxruntime, TensorRT)")
    export.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines for this GPU")
    export.add_argument("--bundle", help="with --onnx/--tensorrt and no --checkpoint: the bundle to build on "
                                         "(default: the default bundle)")
    export.set_defaults(run=cmd_export)


# ------------------------------------------------------------------------------------------------
# enroll, profiles


def cmd_enroll(args) -> int:
    from .enroll import EnrollOptions, enroll

    path = enroll(EnrollOptions(args.images, args.name, bundle=args.bundle, device=args.device))
    say(f"profile {args.name!r} saved to {path}")
    print(path)
    return 0


def register_enroll(commands) -> None:
    enroll = commands.add_parser("enroll", help="create your identity profile from a few selfies (4 recommended)")
    enroll.add_argument("images", nargs="+", metavar="IMG", help="photos of your face, one person per photo")
    enroll.add_argument("--name", required=True, help="profile name, used as --profile NAME later")
    add_model_options(enroll, backend=False)
    enroll.set_defaults(run=cmd_enroll)


def cmd_profiles(args) -> int:
    from . import home

    if args.action == "remove":
        if not args.name:
            raise PluginError("say which profile: instantrestore profiles remove NAME")
        path = home.remove_profile(args.name)
        say(f"removed profile {args.name!r} ({path})")
        return 0
    if args.name:
        raise PluginError("`profiles list` takes no name")
    profiles = home.list_profiles()
    if not profiles:
        say(f"no profiles in {home.profiles_dir()}; create one with `instantrestore enroll IMG... --name NAME`")
        return 0
    current_id = home.default_bundle_id()
    for info in profiles:
        if info.error:
            print(f"{info.name}\t{info.error}")
            continue
        if current_id is None:
            match = ""
        elif info.bundle_id == current_id:
            match = "\tcurrent bundle"
        else:
            match = "\tanother bundle (enroll again)"
        sources = ", ".join(info.sources)
        print(f"{info.name}\t{info.count} photo{'s' if info.count != 1 else ''}\t{info.created}{match}\t{sources}")
    return 0


def register_profiles(commands) -> None:
    profiles = commands.add_parser("profiles", help="list or remove identity profiles")
    profiles.add_argument("action", nargs="?", default="list", choices=["list", "remove"])
    profiles.add_argument("name", nargs="?", help="the profile to remove")
    profiles.set_defaults(run=quiet_when_the_reader_leaves(cmd_profiles))


# ------------------------------------------------------------------------------------------------
# camera, video


def cmd_camera(args) -> int:
    from .camera import CameraOptions, run_camera

    run_camera(CameraOptions(args.profile, input=args.input, bundle=args.bundle, backend=args.backend,
                             device=args.device, size=args.size, fps=args.fps, vcam_backend=args.vcam_backend,
                             vcam_device=args.vcam_device, max_frames=args.max_frames, preview=args.preview,
                             show_stats=args.stats, blend=args.blend, sync_audio=args.sync_audio,
                             audio_source=args.audio_source))
    return 0


def register_camera(commands) -> None:
    camera = commands.add_parser("camera", help="live: your camera in, the restored face out as a virtual camera")
    add_profile_option(camera)
    camera.add_argument("--input", help="camera index (default 0), device path (/dev/video0) or a video file "
                                        "(played at its own rate)")
    camera.add_argument("--size", help="virtual camera size WIDTHxHEIGHT, also asked of the camera (default: 1280x720 "
                                       "asked of a camera, which may deliver another size; a file's own size)")
    camera.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    camera.add_argument("--vcam-backend", help="pyvirtualcam backend: v4l2loopback (Linux), obs, unitycapture (Windows)")
    camera.add_argument("--vcam-device", help="virtual camera device, e.g. /dev/video10 (default: the first free one)")
    camera.add_argument("--max-frames", type=int, help="stop after this many captured frames")
    camera.add_argument("--preview", action="store_true", help="also show the output in a window (q or Esc stops)")
    camera.add_argument("--stats", action="store_true", help="log per-stage timings every 2 s (and draw them on the preview)")
    camera.add_argument("--blend", type=float, default=1.0, help="strength of the restored face, 0..1 (default 1)")
    camera.add_argument("--sync-audio", action="store_true",
                        help="also make a virtual microphone, \"InstantRestore Microphone\", that plays your "
                             "microphone as late as the picture (Linux: PulseAudio or PipeWire); elsewhere, say the "
                             "delay to set")
    camera.add_argument("--audio-source", metavar="NAME",
                        help="the real microphone for --sync-audio, as `pactl list short sources` names it "
                             "(default: the system's default input; implies --sync-audio)")
    add_model_options(camera)
    camera.set_defaults(run=cmd_camera)


def cmd_video(args) -> int:
    from . import video

    video.restore_video(video.VideoOptions(args.input, args.output, args.profile, bundle=args.bundle,
                                           backend=args.backend, device=args.device, batch_size=args.batch_size,
                                           blend=args.blend, overwrite=args.overwrite))
    print(args.output)
    return 0


def register_video(commands) -> None:
    video = commands.add_parser("video", help="restore a recorded video file (audio kept)")
    video.add_argument("input", metavar="IN", help="the video to restore (never modified)")
    video.add_argument("-o", "--output", required=True, metavar="OUT", help="the restored video to write")
    add_profile_option(video)
    video.add_argument("--batch-size", type=int, default=1, help="frames per restorer call (GPU throughput; default 1)")
    video.add_argument("--blend", type=float, default=1.0, help="strength of the restored face, 0..1 (default 1)")
    video.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    add_model_options(video)
    video.set_defaults(run=cmd_video)


BUILTIN_COMMANDS = (register_export, register_enroll, register_profiles, register_camera, register_video)

# The top and the foot of each command's --help: what it does, and examples to start from.
HELP_SCREENS = {
    "export": ("Fetch the authors' checkpoint from the hub (or take a local one), merge its LoRA weights into a "
               "model bundle, and optionally export its ONNX graphs and build TensorRT engines for this GPU. The new "
               "bundle becomes every command's default (`instantrestore bundles` switches back); work already cached "
               "is skipped. Offline: --checkpoint FILE --base DIR --vae DIR, downloaded where the hub is reachable.",
               ("instantrestore export",
                "instantrestore export --checkpoint weights/final_model_ckpt.pt",
                "instantrestore export --checkpoint hwdz15508/InstantRestore/adain_ablation_ckpt.pt",
                "instantrestore export --onnx --tensorrt")),
    "bundles": ("List the model bundles in the state folder (name, precision, the checkpoint it was made from, how "
                "many profiles fit it, which is the default), or make one the default of every command.",
                ("instantrestore bundles", "instantrestore bundles use final_model_ckpt-float16",
                 "instantrestore bundles use /path/to/bundle")),
    "batch": ("Restore every video given (files, folders searched recursively, or .txt files listing paths) into "
              "OUTDIR, keeping each one's relative path and name. A rerun skips what is done (same input, bundle, "
              "profile and options; the output intact). One bad file does not stop the others; the exit code is 2 "
              "if any failed.",
              ("instantrestore batch talks/ -o restored/ --profile me",
               "instantrestore batch list.txt -o /shared/restored --profile me --ray auto",
               "instantrestore batch /shared/talks -o /shared/restored --profile me --ray ray://head:10001")),
    "enroll": ("Make your identity profile from 1 to 8 selfies (4 is best): each photo is checked for one clear, "
               "large enough face, then the reference network runs once and the profile is saved under --name.",
               ("instantrestore enroll me1.jpg me2.jpg me3.jpg me4.jpg --name me",)),
    "profiles": ("List the identity profiles (name, photos, date, whether they fit the current bundle), or remove "
                 "one.",
                 ("instantrestore profiles", "instantrestore profiles remove me")),
    "camera": ("Read your webcam (or a video file), restore your face in every frame and send the result to the "
               "virtual camera, to pick in Zoom, Meet, Teams or OBS. Ctrl+C stops.",
               ("instantrestore camera --profile me",
                "instantrestore camera --profile me --input /dev/video2 --size 1280x720 --fps 30",
                "instantrestore camera --profile me --sync-audio")),
    "video": ("Restore a recorded video file frame by frame; frame count, rate and audio are kept, and the input "
              "is never modified.",
              ("instantrestore video talk.mp4 -o talk.restored.mp4 --profile me",)),
    "ui": ("Open the control panel in your browser: enroll photos, go live with the virtual camera and restore "
           "recordings without a terminal. It serves on this computer only (127.0.0.1) unless --host is given; it "
           "never makes a public link. Ctrl+C stops it.",
           ("instantrestore ui", "instantrestore ui --port 7870 --no-browser")),
    "doctor": ("Check this machine: packages, GPU, backends, face detector, cameras, virtual camera, state folder, "
               "bundle and profiles, with the next step for anything missing. Exits 1 while the camera cannot run.",
               ("instantrestore doctor",)),
    "bench": ("Measure the restore step and its parts, or with --pipeline the whole frame pipeline on a synthetic "
              "1080p clip, naming the device that produced the figures.",
              ("instantrestore bench --random sd-turbo", "instantrestore bench --pipeline --stand-in-ms 10")),
}


def _version() -> str:
    try:
        return importlib.metadata.version("instantrestore")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instantrestore", description="Real-time personalized face restoration.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(commands)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(commands)
    for name, command in commands.choices.items():
        if name not in HELP_SCREENS:  # a new command without its screen yet: the tests say so, the CLI still runs
            continue
        description, examples = HELP_SCREENS[name]
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.description = textwrap.fill(description, 100)
        command.epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived (timeout, docker stop, systemd, a closed terminal). Raised in the main thread
    like KeyboardInterrupt, and like it not an Exception, so every cleanup path runs and nothing swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_signals_raise():
    """SIGTERM and SIGHUP raise Terminated while a command runs (main thread only: signal handlers live
    there); a second signal during the cleanup is ignored so the cleanup finishes. The old handlers come back."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def handler(signum, frame):
        if not stopping:
            stopping.append(signum)
            raise Terminated(signum)

    previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
    try:
        yield
    finally:
        for name, old in previous.items():
            if old is not None:  # None: set outside Python, cannot be put back
                signal.signal(getattr(signal, name), old)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with filtered_native_stderr(enabled=not os.environ.get(DEBUG_ENV)), _stop_signals_raise():
        return _run(args)


def _run(args) -> int:
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("instantrestore: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"instantrestore: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum  # what a shell reports for a process the signal killed: 143 for SIGTERM
    except Exception as error:  # noqa: BLE001 - sorted below: the user's mistakes vs our bugs
        if isinstance(error, InstantRestoreError):  # the user's to fix; anything else is our bug
            print(error_line(error), file=sys.stderr)
            return 2
        if os.environ.get(DEBUG_ENV):
            raise
        print(error_line(error), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
