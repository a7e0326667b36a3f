"""``--help`` of every command explains every flag and argument."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from streamer.cli import build_parser


def arguments(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from arguments(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield " ".join(path), action


def test_every_flag_of_every_command_has_help_text() -> None:
    found = list(arguments(build_parser()))
    assert any(command == "models eval" for command, _ in found)
    silent = [f"{command} {'/'.join(a.option_strings) or a.dest}" for command, a in found if not a.help]
    assert silent == []


def test_models_eval_help_describes_its_flags(capsys: object) -> None:
    (models,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub = next(a for a in models.choices["models"]._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["eval"].format_help()
    for flag, words in {
        "--bundle": "bundle directory",
        "--head": "head to score",
        "--text-col": "text column",
        "--label-col": "label column",
        "--device": "where the encoder runs",
    }.items():
        assert flag in text and words in text, flag
