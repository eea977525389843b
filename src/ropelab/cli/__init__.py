"""The ``ropelab`` command. Bad input prints one line on stderr and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ropelab import __version__
from ropelab.errors import RopeConfigError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


#: what each long command has saved when it is interrupted (Ctrl-C), for the one-line message
_SAVED = {
    "eval": "finished documents are in doc_results.jsonl and finished methods in results.jsonl",
    "passkey": "finished cells are in results.jsonl",
    "tasks": "finished cells are in results.jsonl",
    "lab": "finished units are in results.jsonl",
    "train": "the last resume state (ENCODING.state.pt) is saved",
    "finetune": "the last resume state (state.pt) and the curve so far (curve.jsonl) are saved",
    "search": "every evaluated candidate is in results.jsonl",
    "advise": "finished work is in search/, target/, trained/ and niah/ (each its command's results.jsonl)",
}


def build_parser() -> argparse.ArgumentParser:
    from ropelab.cli import (
        advise_cmd,
        check_cmd,
        finetune_cmd,
        lab_cmds,
        model_cmds,
        presets_cmd,
        report_cmd,
        rope_cmds,
        search_cmd,
        tasks_cmd,
    )

    parser = _Parser(
        prog="ropelab",
        description="Positional encodings and context-window extension for transformer language models.",
    )
    parser.add_argument("--version", action="version", version=f"ropelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    rope_cmds.register(sub)
    model_cmds.register(sub)
    tasks_cmd.register(sub)
    lab_cmds.register(sub)
    finetune_cmd.register(sub)
    presets_cmd.register(sub)
    check_cmd.register(sub)
    report_cmd.register(sub)
    search_cmd.register(sub)
    advise_cmd.register(sub)
    return parser


def _quiet_transformers() -> None:
    """--quiet: transformers' own progress bars (GGUF de-quantisation, saving shards) off too."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _unreadable_file() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:
        return ()
    return (SafetensorError,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):
        _quiet_transformers()
    try:
        from ropelab.cli.common import check_out_dir

        if isinstance(getattr(args, "out", None), Path):
            check_out_dir(args.out)  # before any work: a bad --out fails now, not after the long part
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:  # `ropelab inspect ... | head`: the reader left; not an error of ours
        # let the interpreter's final flush write nowhere instead of failing again
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RopeConfigError as err:
        sys.stderr.write(f"ropelab {args.command}: error: {err}\n")
        return 2
    except _unreadable_file() as err:  # not a safetensors file (finetune --model x.safetensors)
        sys.stderr.write(f"ropelab {args.command}: error: not a readable safetensors file: {err}\n")
        return 2
    except OSError as err:  # a file the command could not read or write (missing, permissions, disk full)
        where = f": {err.filename}" if err.filename else ""
        sys.stderr.write(f"ropelab {args.command}: error: {err.strerror or err}{where}\n")
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        saved = _SAVED.get(args.command, "finished work is in results.jsonl")
        where = f" in {out}" if out is not None else ""
        sys.stderr.write(
            f"ropelab {args.command}: interrupted; {saved}{where}; run the same command again to continue\n"
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
