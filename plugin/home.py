"""The plugin's state folder: settings (the last exported bundle), identity profiles, bundles and the engine
cache. Only the plugin decides where it is (the runtime and export take folders as parameters):
``INSTANTRESTORE_HOME`` or the platform's per-user data folder.

    <state>/settings.json              {"bundle": "/abs/path/of/the/last/exported/bundle"}
    <state>/profiles/<name>.safetensors
    <state>/bundles/<name>/            where `export` writes when no --out is given
    <state>/engines/                   ONNX graphs and TensorRT engines (runtime/engine_cache.py)
    <state>/restored/                  recordings restored from the panel (plugin/ui.py)
    <state>/bench/                     the random-weight bundles of `bench --random` (plugin/benchmarks.py)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

from instantrestore.runtime import Bundle, Profile, ProfileError, load_bundle
from instantrestore.runtime.errors import InstantRestoreError
from instantrestore.runtime.files import atomic_write_json

from .progress import say

APP_NAME = "instantrestore"
HOME_ENV = "INSTANTRESTORE_HOME"
SETTINGS_NAME = "settings.json"
PROFILE_SUFFIX = ".safetensors"
# Profile names become file names: keep them portable across file systems (matched whole: `$` would let a
# trailing newline through)
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class StateError(InstantRestoreError, ValueError):
    """Bad or missing state a user can fix (no bundle yet, unknown profile, bad profile name)."""


def state_dir() -> Path:
    """The folder for profiles, engines and settings.

    `INSTANTRESTORE_HOME` wins; otherwise the platform's per-user data folder.
    """
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    home = Path.home()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / APP_NAME


def engines_dir() -> Path:
    """The engine cache's folder, which the plugin passes to the runtime and export."""
    return state_dir() / "engines"


def settings_path() -> Path:
    return state_dir() / SETTINGS_NAME


def profiles_dir() -> Path:
    return state_dir() / "profiles"


def bundles_dir() -> Path:
    """Where `export` writes bundles when no --out is given, one folder each."""
    return state_dir() / "bundles"


def read_settings() -> dict:
    try:
        settings = json.loads(settings_path().read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no settings yet (a bad state folder is check_writable's)
        return {}
    except (OSError, ValueError) as error:
        raise StateError(f"{settings_path()} is unreadable ({error}); delete it and export again") from None
    return settings if isinstance(settings, dict) else {}


def writable_problem(folder: Path) -> Optional[str]:
    """Why `folder` cannot be written or created, or None. Its nearest existing ancestor decides."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is None:
        return f"{folder} cannot be created"
    if not existing.is_dir():
        return f"{folder} cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{folder} is not writable" if existing == folder else f"{folder} cannot be created in {existing}"
    return None


def check_writable(folder: Path) -> Path:
    """`folder`, or StateError before any slow work when what it produces could not be saved there."""
    problem = writable_problem(folder)
    if problem:
        raise StateError(f"{problem}; make it writable or set INSTANTRESTORE_HOME to a writable folder")
    return folder


def write_settings(**changes) -> Path:
    settings = read_settings()
    settings.update(changes)
    return atomic_write_json(settings_path(), settings)


def remember_bundle(bundle_dir) -> Path:
    """Make `bundle_dir` the default for every command's --bundle."""
    return write_settings(bundle=str(Path(bundle_dir).expanduser().resolve()))


def last_bundle_dir() -> Optional[Path]:
    value = read_settings().get("bundle")
    return Path(value) if isinstance(value, str) and value else None


def default_bundle_id() -> Optional[str]:
    """The default bundle's id, or None when there is none or it is unreadable (listings work without one)."""
    try:
        path = last_bundle_dir()
        return load_bundle(path).bundle_id if path else None
    except Exception:  # noqa: BLE001 - reported by the commands that need the bundle
        return None


def resolve_bundle(bundle_arg=None) -> Bundle:
    """The bundle given with --bundle, else the last exported one; clear errors when there is none. Every
    command that restores or enrolls gets its bundle here, so here a random-weight one is announced."""
    if bundle_arg is not None:
        path = Path(bundle_arg).expanduser()
        if not path.exists():
            raise StateError(f"model bundle {path} does not exist")
    else:
        path = last_bundle_dir()
        if path is None:
            raise StateError("no model bundle yet: run `instantrestore export` first (or try everything with "
                             "`instantrestore demo`), or pass --bundle DIR")
        if not path.exists():
            raise StateError(f"the default bundle {path} is gone; export again, choose another with "
                             "`instantrestore bundles use NAME`, or pass --bundle DIR")
    bundle = load_bundle(path)
    if bundle.random_weights:
        say(f"DEMO MODEL: {path} has random weights, not the real model; what it restores is noise, marked "
            "DEMO MODEL (`instantrestore export` gets the real one)")
    return bundle


def check_profile_name(name: str) -> str:
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        raise StateError(
            f"bad profile name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def profile_path(name: str) -> Path:
    return profiles_dir() / (check_profile_name(name) + PROFILE_SUFFIX)


def load_profile(name: str, bundle: Bundle) -> Profile:
    """The profile `name`, refused when it was enrolled with another bundle."""
    path = profile_path(name)
    if not path.is_file():
        known = [info.name for info in list_profiles()]
        hint = f"; known profiles: {', '.join(known)}" if known else ""
        raise StateError(f"no profile named {name!r}: enroll it with `instantrestore enroll IMG... --name {name}`{hint}")
    try:
        profile = Profile.load(path, bundle_id=bundle.bundle_id)
    except ProfileError as error:
        raise ProfileError(f"profile {name!r}: {error}") from None
    if profile.embeddings is None:
        _add_identity(name, path, profile)
    return profile


def _add_identity(name: str, path: Path, profile: Profile) -> None:
    """Profiles made before face recognition get their photos' identity descriptors once, from the aligned
    thumbnails they keep; refused when those do not show one person."""
    from instantrestore.runtime.identity import MATCH_DISTANCE, crop_descriptors, pairwise_distances

    embeddings = crop_descriptors(profile.thumbnails.numpy())
    if len(embeddings) > 1:
        if pairwise_distances(embeddings).max() >= MATCH_DISTANCE:
            raise ProfileError(f"profile {name!r} was made before face recognition and its photos do not look like "
                               "one person; enroll again")
    profile.embeddings = embeddings
    profile.save(path)


def load_profiles(names, bundle: Bundle) -> dict:
    """name -> Profile for each --profile given (each name once)."""
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    if not names:
        raise StateError("give at least one --profile")
    return {name: load_profile(name, bundle) for name in names}


@dataclasses.dataclass
class ProfileInfo:
    name: str
    path: Path
    bundle_id: str = ""
    count: int = 0
    created: str = ""
    sources: tuple = ()
    error: str = ""


def read_profile_info(path: Path) -> ProfileInfo:
    """What `profiles list` shows, read from the file's header only (no tensors)."""
    info = ProfileInfo(name=path.name[: -len(PROFILE_SUFFIX)], path=path)
    try:
        meta = Profile.read_header(path)
        extra = json.loads(meta.get("info", "{}"))
    except (ProfileError, ValueError) as error:  # ValueError: the info field is not JSON
        info.error = f"unreadable ({' '.join(str(error).split())})"
        return info
    info.bundle_id = meta.get("bundle_id", "")
    info.count = int(meta.get("count", 0) or 0)
    info.created = meta.get("created", "")
    info.sources = tuple(extra.get("sources", ()))
    return info


def list_profiles() -> list:
    folder = profiles_dir()
    if not folder.is_dir():
        return []
    return [read_profile_info(p) for p in sorted(folder.glob("*" + PROFILE_SUFFIX)) if not p.name.startswith(".")]


def remove_profile(name: str) -> Path:
    path = profile_path(name)
    if not path.is_file():
        raise StateError(f"no profile named {name!r}")
    path.unlink()
    return path
