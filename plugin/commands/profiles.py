"""`instantrestore profiles`: list the identity profiles, or remove one."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .. import home
from ..errors import PluginError
from ..progress import TERMINAL, Progress
from . import Outcome

NAME = "profiles"
SUMMARY = "list or remove identity profiles"
DESCRIPTION = "List the identity profiles (name, photos, date, whether they fit the current bundle), or remove one."
EXAMPLES = ("instantrestore profiles", "instantrestore profiles remove me")


@dataclasses.dataclass
class Options:
    """`list` (no name) or `remove` NAME."""

    action: str = "list"
    name: Optional[str] = None

    def __post_init__(self):
        if self.action not in ("list", "remove"):
            raise PluginError(f"`profiles {self.action}`: use list or remove")
        if self.action == "remove" and not self.name:
            raise PluginError("say which profile: instantrestore profiles remove NAME")
        if self.action == "list" and self.name:
            raise PluginError("`profiles list` takes no name")


def add_arguments(parser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "remove"])
    parser.add_argument("name", nargs="?", help="the profile to remove")


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    if options.action == "remove":
        path = home.remove_profile(options.name)
        progress(f"removed profile {options.name!r} ({path})")
        return Outcome(value=path)
    profiles = home.list_profiles()
    if not profiles:
        progress(f"no profiles in {home.profiles_dir()}; create one with `instantrestore enroll IMG... --name NAME`")
    current_id = home.default_bundle_id()
    return Outcome([profile_row(info, current_id) for info in profiles], value=profiles)


def profile_row(info: home.ProfileInfo, current_id: Optional[str]) -> str:
    """One tab-separated line: name, photos, date, whether it fits the current bundle, the photos' names."""
    if info.error:
        return f"{info.name}\t{info.error}"
    if current_id is None:
        match = ""
    elif info.bundle_id == current_id:
        match = "\tcurrent bundle"
    else:
        match = "\tanother bundle (enroll again)"
    sources = ", ".join(info.sources)
    return f"{info.name}\t{info.count} photo{'s' if info.count != 1 else ''}\t{info.created}{match}\t{sources}"
