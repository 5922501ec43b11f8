"""Command line entry point: `instantrestore <command>`."""

from __future__ import annotations

import argparse
import sys

from instantrestore.export import CheckpointError
from instantrestore.runtime import BundleError, ProfileError

# errors a user can cause: one line, non-zero exit, no traceback
USER_ERRORS = (CheckpointError, BundleError, ProfileError, ValueError, FileNotFoundError, PermissionError)


def _progress(message: str) -> None:
    print(f"[instantrestore] {message}", file=sys.stderr, flush=True)


def cmd_export(args) -> int:
    from instantrestore.export import import_checkpoint

    bundle = import_checkpoint(
        checkpoint=args.checkpoint, base=args.base, vae=args.vae, out=args.out, dtype=args.dtype, progress=_progress
    )
    print(bundle)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instantrestore", description="Real-time personalized face restoration.")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="import the authors' checkpoint into a model bundle")
    export.add_argument("--checkpoint", required=True, help="the authors' final_model_ckpt.pt")
    export.add_argument("--base", default="stabilityai/sd-turbo", help="hub id or local diffusers folder")
    export.add_argument("--vae", default="stabilityai/sd-vae-ft-mse", help="hub id or local diffusers folder")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    export.set_defaults(run=cmd_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as e:
        print(f"instantrestore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instantrestore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
