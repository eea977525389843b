"""One set of flag names across commands (docs/cli.md), old spellings still accepted."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ropelab.cli import build_parser
from ropelab.cli.flags import length, length_list

ROOT = Path(__file__).resolve().parents[1]
#: concept -> the one flag name; the other spellings may exist only as aliases of it
CANONICAL = {
    "batch": ("--batch-size", {"--batch", "--finetune-batch-size"}),
    "dtype": ("--dtype", {"--precision"}),
    "save": ("--save-every", {"--checkpoint-every"}),
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_concept_has_one_flag_name_in_every_command() -> None:
    for command, parser in _commands().items():
        dests = {s: a.dest for a in parser._actions for s in a.option_strings}
        for action in parser._actions:
            strings = set(action.option_strings)
            for concept, (name, old) in CANONICAL.items():
                if strings & old and action.option_strings[0] != name:
                    # only as a hidden alias that fills the canonical flag's value
                    assert action.help == argparse.SUPPRESS, (command, concept, action.option_strings)
                    assert dests.get(name) == action.dest, (command, concept, action.option_strings)
        outs = [a for a in parser._actions if "--out" in a.option_strings]
        for a in outs:
            assert a.option_strings == ["--out"], command


def test_lengths_read_alike_everywhere() -> None:
    assert length("16k") == 16384 and length("512") == 512
    assert length_list("2k,4k,2048") == [2048, 4096]
    with pytest.raises(argparse.ArgumentTypeError):
        length("2k,4k")


@pytest.mark.parametrize("command", ["eval", "passkey", "lab", "train", "finetune"])
def test_help_renders_without_escaped_percent(command: str) -> None:
    text = _commands()[command].format_help()
    assert "%%" not in text


def test_flags_are_documented_once() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for flag in (
        "--method",
        "--log-n",
        "--batch-size",
        "--dtype",
        "--device",
        "--save-every",
        "--out",
        "--threads",
    ):
        assert f"`{flag}" in doc, flag
