"""`instantrestore bundles`: the model bundles in the state folder, and which one is the default.

Every export becomes the default `--bundle`; profiles belong to the bundle they were enrolled with, so
switching back to an earlier bundle (say after trying a float32 export) brings its profiles back.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

from instantrestore.runtime import BundleError, load_bundle

from .. import home
from ..progress import TERMINAL, Progress
from . import Outcome

NAME = "bundles"
SUMMARY = "list the model bundles; choose the default one"
DESCRIPTION = ("List the model bundles in the state folder (name, precision, the checkpoint it was made from, how many "
               "profiles fit it, which is the default), or make one the default of every command.")
EXAMPLES = ("instantrestore bundles", "instantrestore bundles use final_model_ckpt-float16",
            "instantrestore bundles use /path/to/bundle")


@dataclasses.dataclass
class Options:
    """`list` (no name) or `use` NAME|DIR (a bundle's name under bundles/ in the state folder, or its folder)."""

    action: str = "list"
    bundle: Optional[str] = None

    def __post_init__(self):
        if self.action not in ("list", "use"):
            raise home.StateError(f"`bundles {self.action}`: use list or use")
        if self.action == "use" and not self.bundle:
            raise home.StateError("say which bundle: instantrestore bundles use NAME|DIR")
        if self.action == "list" and self.bundle:
            raise home.StateError("`bundles list` takes no name; `bundles use NAME` chooses the default")


def add_arguments(parser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "use"])
    parser.add_argument("bundle", nargs="?", metavar="NAME|DIR",
                        help="with `use`: a bundle's name under bundles/ in the state folder, or its folder")


def default_name(checkpoint, dtype: str) -> str:
    """The folder name `export` gives a bundle under bundles/: the checkpoint's file stem and the precision,
    so the release's checkpoints and precisions each keep their own bundle."""
    stem = Path(str(checkpoint).replace("\\", "/").rsplit("/", 1)[-1]).stem
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem) or 'bundle'}-{dtype}"


def profiles_fitting(bundle_id: str) -> list[str]:
    return [info.name for info in home.list_profiles() if info.bundle_id == bundle_id]


def make_default(bundle_dir: Path, previous: Optional[Path], progress: Progress = TERMINAL) -> None:
    """Record `bundle_dir` as the default bundle and say what changed and how to go back."""
    try:
        home.remember_bundle(bundle_dir)
    except OSError as error:  # the bundle is fine; only the default for --bundle is not recorded
        progress(f"warning: could not record {bundle_dir} as the default bundle ({error}); pass --bundle")
        return
    if previous is None or previous.resolve() == Path(bundle_dir).resolve():
        return
    fitting = profiles_fitting(load_bundle(bundle_dir).bundle_id)
    stranded = [info.name for info in home.list_profiles() if info.name not in fitting and not info.error]
    progress(f"{bundle_dir} is now the default bundle (it was {previous}); switch back with "
        f"`instantrestore bundles use {_handle(previous)}`")
    if stranded:
        progress(f"profiles enrolled with another bundle, not usable with this one: {', '.join(stranded)}")


def _handle(path: Path) -> str:
    """How `bundles use` names a bundle: its name if it lives under bundles/, else its folder."""
    path = Path(path).expanduser().resolve()
    return path.name if path.parent == home.bundles_dir().resolve() else str(path)


def known_bundles() -> list[Path]:
    """The bundles under bundles/ in the state folder, and the default wherever it lives."""
    folder = home.bundles_dir()
    found = sorted(p.resolve() for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    default = home.last_bundle_dir()
    if default is not None and default.resolve() not in found and default.exists():
        found.append(default.resolve())
    return found


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    if options.action == "use":
        return use(options.bundle, progress)
    default = home.last_bundle_dir()
    default = default.resolve() if default is not None else None
    paths = known_bundles()
    if not paths:
        progress(f"no bundles in {home.bundles_dir()}; create one with `instantrestore export`")
    return Outcome([bundle_row(path, path == default) for path in paths], value=paths)


def use(name: str, progress) -> Outcome:
    """Make the bundle `name` (under bundles/, or a folder) every command's default."""
    named = home.bundles_dir() / name
    path = named if "/" not in name and named.is_dir() else Path(name).expanduser()
    if not path.is_dir():
        raise home.StateError(f"no bundle named {name!r} and no such folder; `instantrestore bundles` lists them")
    bundle = load_bundle(path)
    home.remember_bundle(path)
    fitting = profiles_fitting(bundle.bundle_id)
    progress(f"default bundle: {path.resolve()} ({len(fitting)} profile{'s' if len(fitting) != 1 else ''} fit it"
             f"{': ' + ', '.join(fitting) if fitting else ''})")
    return Outcome(value=path.resolve())


def bundle_row(path: Path, is_default: bool) -> str:
    """One tab-separated line: name, precision, what it was made from, how many profiles fit it, the default."""
    marker = "default" if is_default else ""
    try:
        bundle = load_bundle(path)
    except BundleError as error:
        return "\t".join([_handle(path), f"unusable ({' '.join(str(error).split())})", marker]).rstrip()
    source = bundle.config.get("source", {})
    made_from = source.get("checkpoint") or (f"random {source['random']}" if "random" in source else "?")
    count = len(profiles_fitting(bundle.bundle_id))
    return "\t".join([_handle(path), bundle.config["dtype"], made_from, f"{count} profile{'s' if count != 1 else ''}",
                      marker]).rstrip()
