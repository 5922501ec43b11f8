"""The commands: one module each, all built the same way, so the command line and the panel run them alike.

A command module holds
- NAME, SUMMARY (its line in `instantrestore --help`), DESCRIPTION and EXAMPLES (its own --help screen);
- `Options`, a dataclass of what it is asked: the defaults and ranges live there and are checked once, when it is
  made (a bad value raises the command's one-line error), by the CLI and the panel alike;
- `add_arguments(parser)`: its command-line flags, each `dest` a field of Options;
- `run(options, progress)`: the work, reporting through a progress.Progress; it returns an Outcome, whose lines
  `cli.py` prints and whose value the panel shows.

A new command is one module here plus its name in COMMANDS.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Protocol, Sequence, runtime_checkable

# In the order `instantrestore --help` lists them.
COMMANDS = ("export", "enroll", "profiles", "camera", "video", "bundles", "batch", "doctor", "bench", "ui", "demo")


@dataclasses.dataclass
class Outcome:
    """What a command hands back: the lines for standard output (what a script reads: a path, a table, JSON), the
    exit status, and the result itself (for the panel and the tests)."""

    lines: Sequence[str] = ()
    status: int = 0
    value: Any = None


@runtime_checkable
class Command(Protocol):
    """The contract every module in COMMANDS keeps (checked by tests/plugin/commands/test_contract.py)."""

    NAME: str
    SUMMARY: str
    DESCRIPTION: str
    EXAMPLES: Sequence[str]
    Options: type

    def add_arguments(self, parser) -> None: ...

    def run(self, options, progress) -> Outcome: ...


def command(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def all_commands() -> list:
    return [command(name) for name in COMMANDS]


def options_from(options_class: type, values) -> Any:
    """The command's Options from parsed arguments (an argparse Namespace): every field a flag gave; the others
    keep the dataclass's defaults, the one place they are written."""
    given = {field.name: getattr(values, field.name) for field in dataclasses.fields(options_class)
             if getattr(values, field.name, None) is not None}
    return options_class(**given)
