"""The one set of flag names every command uses (documented once, in ``docs/cli.md``).

Each ``add_*`` function adds one flag with one name, one type and one help text; a command calls the ones
it needs. Old spellings stay accepted as hidden aliases (``--batch`` for ``--batch-size``, ``--precision``
for ``--dtype``, ``--checkpoint-every`` for ``--save-every``) so that existing scripts keep working.

| flag | meaning |
|---|---|
| ``--method M[,M...]`` | methods in the grammar of :func:`ropelab.registry.parse_method` (aliases accepted) |
| ``--log-n`` | log-n on every method (as ``+log-n``) |
| ``--length 16k`` / ``--lengths 2k,4k`` | token counts; ``k`` = 1024 |
| ``--batch-size N`` | sequences per step (per process) |
| ``--dtype DTYPE`` | auto, float32, bfloat16, float16 (fp32/bf16/fp16); auto: float32 on CPU, bf16 on GPU |
| ``--device auto|cpu|cuda|cuda:N|mps`` | where the model runs |
| ``--save-every N`` | a resume state every N steps |
| ``--threads N`` | torch CPU threads |
| ``--out DIR`` | the output folder (results.jsonl, report.md, plots) |
| ``--quiet`` | no progress output |
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

Parser = argparse.ArgumentParser | argparse._ArgumentGroup

#: accepted spellings -> the canonical dtype name
DTYPES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (0 never silently means "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _one_length(part: str, text: str) -> int:
    part = part.strip().lower()
    try:
        value = int(float(part[:-1]) * 1024) if part.endswith("k") else int(part)
    except (ValueError, OverflowError):  # "abc", "nan", "infk"
        raise argparse.ArgumentTypeError(f"expected lengths like 2k,4096, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"lengths must be >= 2, got {value}")
    return value


def length_list(text: str) -> list[int]:
    """``2k,4k,8192`` -> [2048, 4096, 8192] (sorted, repeats dropped)."""
    out = [_one_length(part, text) for part in text.split(",") if part.strip()]
    if not out:
        raise argparse.ArgumentTypeError("no length given")
    return sorted(set(out))


def length(text: str) -> int:
    """One length: ``16k`` -> 16384, ``512`` -> 512."""
    values = length_list(text)
    if len(values) != 1 or "," in text.strip().strip(","):
        raise argparse.ArgumentTypeError(f"expected one length like 16k, got {text!r}")
    return values[0]


def prefill_chunk(text: str) -> int:
    """``--prefill-chunk``: ``0`` (one pass) or a number of tokens like ``4096`` or ``4k``."""
    return 0 if text.strip() == "0" else length(text)


def dtype_name(text: str) -> str:
    """An argparse type: a dtype spelling -> its canonical name (``bf16`` -> ``bfloat16``)."""
    try:
        return DTYPES[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {text!r}; choose auto, float32, bfloat16 or float16 (fp32, bf16, fp16)"
        ) from None


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; choose auto, cpu, cuda, cuda:N or mps")


def add_dtype(parser: Parser, *, default: str = "auto") -> None:
    parser.add_argument(
        "--dtype",
        "--precision",
        type=dtype_name,
        default=default,
        metavar="DTYPE",
        help=f"auto, float32, bfloat16 or float16 (fp32, bf16, fp16); auto: float32 on a CPU, bfloat16 on "
        f"a GPU (default {default})",
    )


def add_device(parser: Parser) -> None:
    parser.add_argument(
        "--device", type=device_name, default="auto", help="auto (default), cpu, cuda, cuda:N or mps"
    )


def add_batch_size(parser: Parser, *, default: int, what: str = "sequences per step") -> None:
    parser.add_argument(
        "--batch-size", "--batch", type=positive_int, default=default, help=f"{what} (default {default})"
    )


def add_save_every(parser: Parser, *, default: int) -> None:
    parser.add_argument(
        "--save-every",
        "--checkpoint-every",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"save a resume state every N steps (default {default})",
    )


def add_threads(parser: Parser, *, default: int | None = None) -> None:
    shown = "torch's choice" if default is None else str(default)
    parser.add_argument(
        "--threads", type=positive_int, default=default, help=f"torch CPU threads (default {shown})"
    )


def add_quiet(parser: Parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def add_corpus(parser: argparse.ArgumentParser) -> None:
    """``--corpus``: the documents to score (:func:`ropelab.data.load_corpus`)."""
    parser.add_argument(
        "--corpus",
        default="stdlib",
        help="stdlib (default: Python code), pydoc (English: the Python reference manual), FILE, DIR, "
        "or hf:NAME[:split]",
    )


def add_out(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(default),
        help=f"folder for results.jsonl, report.md and plots (default {default})",
    )
