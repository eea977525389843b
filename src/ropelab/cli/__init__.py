"""The ``ropelab`` command. Bad input prints one line on stderr and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from ropelab import __version__
from ropelab.errors import RopeConfigError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from ropelab.cli import check_cmd, finetune_cmd, lab_cmds, model_cmds, rope_cmds

    parser = _Parser(
        prog="ropelab",
        description="Positional encodings and context-window extension for transformer language models.",
    )
    parser.add_argument("--version", action="version", version=f"ropelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    rope_cmds.register(sub)
    model_cmds.register(sub)
    lab_cmds.register(sub)
    finetune_cmd.register(sub)
    check_cmd.register(sub)
    return parser


def _quiet_transformers() -> None:
    """--quiet: transformers' own progress bars (GGUF de-quantisation, saving shards) off too."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):
        _quiet_transformers()
    try:
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
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        sys.stderr.write(f"ropelab {args.command}: error: {err.strerror}: {err.filename}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"ropelab {args.command}: interrupted; finished work is in results.jsonl\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
