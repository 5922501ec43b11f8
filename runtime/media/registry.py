"""The one place a spec becomes a source or a sink: `open_source(spec)` and `open_sink(spec)`.

Each kind of source or sink joins by one call, `register_source(name, matches, open)` or
`register_sink(name, matches, open)` (the built-in ones at the end of their own module):
matches(spec) -> bool says whether a spec (always a str) is one of its kind; open(spec, **options) opens it.
Options are keyword arguments a caller passes to whatever the spec turns out to be (a camera's size and fps,
a file sink's like=source ...): each opener takes the ones it knows and ignores the others.
The first registration whose matches() is true wins, in the order they were registered; registering a name
again replaces its entry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from .base import Sink, SinkNotFound, Source, SourceNotFound


@dataclasses.dataclass(frozen=True)
class Registration:
    name: str
    matches: Callable[[str], bool]
    open: Callable[..., object]


SOURCES: dict[str, Registration] = {}
SINKS: dict[str, Registration] = {}


def register_source(name: str, matches: Callable[[str], bool], open: Callable[..., Source]) -> None:
    """Make open_source() open the specs `matches` accepts with `open(spec, **options)`."""
    SOURCES[name] = Registration(name, matches, open)


def register_sink(name: str, matches: Callable[[str], bool], open: Callable[..., Sink]) -> None:
    """Make open_sink() open the specs `matches` accepts with `open(spec, **options)`."""
    SINKS[name] = Registration(name, matches, open)


def find(registry: dict, spec: str):
    return next((entry for entry in registry.values() if entry.matches(spec)), None)


def open_source(spec, **options) -> Source:
    """The source `spec` names: a camera ("0", "/dev/video2"), a video file, or any registered kind.
    SourceNotFound ("<spec>: ...") when none matches; the opener's own MediaError when it cannot open."""
    spec = str(spec)
    entry = find(SOURCES, spec)
    if entry is not None:
        return entry.open(spec, **options)
    if Path(spec).is_dir():
        raise SourceNotFound(f"{spec}: is a folder, not a camera or video file")
    raise SourceNotFound(f"{spec}: no such camera index, device or video file")


def open_sink(spec, **options) -> Sink:
    """The sink `spec` names: a video file ("out.mp4"), "virtual-camera", "preview", or any registered kind.
    SinkNotFound when none matches."""
    spec = str(spec)
    entry = find(SINKS, spec)
    if entry is None:
        known = ", ".join(SINKS) or "none"
        raise SinkNotFound(f"{spec}: not a sink this program knows (registered: {known}; a file needs its "
                           "extension, e.g. out.mp4)")
    return entry.open(spec, **options)
