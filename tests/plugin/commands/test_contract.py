"""Every command keeps the one contract (plugin/commands/__init__.py): its flags are its Options' fields, its
Options check what it was asked when made, and a new command joins the command line by its module alone."""

import argparse
import dataclasses
import sys
import types

import pytest

from instantrestore.plugin import commands
from instantrestore.plugin.cli import build_parser, main
from instantrestore.plugin.commands import Command, Outcome, all_commands, options_from
from instantrestore.plugin.errors import PluginError
from instantrestore.runtime.errors import InstantRestoreError


def flags_of(command) -> list:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return [action for action in parser._actions if action.dest != "help"]


@pytest.mark.parametrize("command", all_commands(), ids=lambda command: command.NAME)
def test_each_command_keeps_the_contract(command):
    assert isinstance(command, Command)
    assert dataclasses.is_dataclass(command.Options)
    fields = {field.name for field in dataclasses.fields(command.Options)}
    for action in flags_of(command):
        assert action.dest in fields, f"{command.NAME}: {action.option_strings or action.dest} is no Options field"
        # a default written in the parser would hide the dataclass's: the one place defaults live is Options
        assert action.default in (None, False), f"{command.NAME}: {action.dest} has a parser default"
    required = {field.name for field in dataclasses.fields(command.Options)
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
    assert required <= {action.dest for action in flags_of(command)}, command.NAME


@pytest.mark.parametrize("name, values, message", [
    ("video", dict(input="a.mp4", output="b.mp4", profile="me", blend=1.5), "--blend must be between 0 and 1"),
    ("video", dict(input="a.mp4", output="b.mp4", profile="me", batch_size=0), "--batch-size must be at least 1"),
    ("camera", dict(profile="me", blend=-0.1), "--blend must be between 0 and 1"),
    ("camera", dict(profile="me", size="wide"), "--size must look like 1280x720"),
    ("camera", dict(profile="me", fps=0), "--fps must be between 1 and 240"),
    ("batch", dict(inputs=["a"], out_dir="out", profile="me", jobs=0), "--jobs must be at least 1"),
    ("enroll", dict(images=[], name="me"), "give at least one photo"),
    ("profiles", dict(action="remove"), "say which profile"),
    ("bench", dict(soak=True, pipeline=True), "--soak and --pipeline are two benchmarks"),
    ("bench", dict(compile=True, backend="onnxruntime"), "--compile: the onnxruntime backend has nothing to compile"),
])
def test_options_are_checked_once_when_made_by_any_front_end(name, values, message):
    """The command line and the panel build the same Options: a bad value is the same one line from both."""
    with pytest.raises(InstantRestoreError, match=message.replace("(", r"\(")):
        commands.command(name).Options(**values)


def test_flags_not_given_keep_the_options_defaults():
    video = commands.command("video")
    args = build_parser().parse_args(["video", "in.mp4", "-o", "out.mp4", "--profile", "me"])
    options = options_from(video.Options, args)
    assert options == video.Options("in.mp4", "out.mp4", ["me"])
    assert (options.backend, options.blend, options.batch_size) == ("auto", 1.0, 1)


def test_a_new_command_is_one_module_and_its_name(monkeypatch, capsys):
    """A toy command, registered the way the built-in ones are: its help screen, its flags and its run, with the
    command line's printing and exit codes, and nothing else edited."""
    toy = types.ModuleType(f"{commands.__name__}.toy")
    toy.NAME, toy.SUMMARY = "toy", "count to a number"
    toy.DESCRIPTION, toy.EXAMPLES = "Count from one to --to, one number per line, saying when it is done.", \
        ("instantrestore toy --to 3",)

    @dataclasses.dataclass
    class Options:
        to: int = 2

        def __post_init__(self):
            if self.to < 1:
                raise PluginError(f"--to must be at least 1, got {self.to}")

    def add_arguments(parser):
        parser.add_argument("--to", type=int, help="the last number")

    def run(options, progress):
        progress("counted")
        return Outcome([str(n) for n in range(1, options.to + 1)], status=3)

    toy.Options, toy.add_arguments, toy.run = Options, add_arguments, run
    monkeypatch.setitem(sys.modules, toy.__name__, toy)
    monkeypatch.setattr(commands, "COMMANDS", (*commands.COMMANDS, "toy"))

    assert main(["toy", "--to", "3"]) == 3
    out, err = capsys.readouterr()
    assert out.split() == ["1", "2", "3"] and "[instantrestore] counted" in err
    assert main(["toy"]) == 3 and capsys.readouterr().out.split() == ["1", "2"]
    assert main(["toy", "--to", "0"]) == 2
    assert capsys.readouterr().err.strip() == "instantrestore: error: --to must be at least 1, got 0"
    with pytest.raises(SystemExit):
        main(["toy", "--help"])
    assert "examples:\n  instantrestore toy --to 3" in capsys.readouterr().out
