"""Command line entry point: `instantrestore <command>`. It only parses and prints: each command (plugin/commands/)
declares its flags, builds its Options from them (where its defaults and ranges are checked) and does its work in
`run(options, progress)`; what goes wrong is one line from messages.py, as the panel shows it too."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import sys
import textwrap

from instantrestore.runtime.errors import InstantRestoreError

from .commands import all_commands, options_from
from .messages import DEBUG_ENV, error_line
from .progress import TERMINAL
from .quiet import filtered_native_stderr
from .stopping import Terminated, stop_signals_raise


def _version() -> str:
    try:
        return importlib.metadata.version("instantrestore")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """`instantrestore` and a sub-parser per command, each with its own screen: what it does, and examples."""
    parser = argparse.ArgumentParser(prog="instantrestore", description="Real-time personalized face restoration.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    for command in all_commands():
        sub = commands.add_parser(command.NAME, help=command.SUMMARY, description=textwrap.fill(command.DESCRIPTION, 100),
                                  epilog="examples:\n" + "\n".join(f"  {example}" for example in command.EXAMPLES),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with filtered_native_stderr(enabled=not os.environ.get(DEBUG_ENV)), stop_signals_raise():
        return _run(args)


def _run(args) -> int:
    try:
        command = args.command
        outcome = command.run(options_from(command.Options, args), TERMINAL)
        return _print(outcome.lines, outcome.status)
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


def _print(lines, status: int) -> int:
    """A command's lines on standard output. When the reader stops early (`instantrestore profiles | head -1`), the
    command ends quietly with status 141, as Unix tools do on SIGPIPE."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's own flush at exit
    except BrokenPipeError:
        # stdout's buffer still holds lines; Python would report failing to flush them at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE (13), what a shell reports for a tool stopped that way
    return status


if __name__ == "__main__":
    sys.exit(main())
