"""The lab corpus: the Python standard library's own source, as bytes (vocabulary 256).

Every machine with Python has it, so the lab needs no download. The corpus is the top-level
``*.py`` files of ``sysconfig.get_paths()["stdlib"]``, sorted by name. The split is by file and
deterministic: a file is held out for validation when the first 8 hex digits of
``sha256(file name)``, read as an integer, are divisible by 10 (about 10% of the files; on
CPython 3.11 that is 18 of 168 files, 0.46 of 4.7 MB). Nothing else in the file decides it, so
the split of a given file name is the same on every Python version.

The split rule (:func:`ropelab.data.is_validation`) and the training batches
(:class:`ropelab.data.RandomWindows`) are the library's, re-exported here.

Tokens are raw bytes (0..255); training files are joined with a NUL byte between them.
Different Python versions ship slightly different standard libraries: :func:`corpus_info`
records the version and a hash of the corpus so results can say which text they were made on.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ropelab.data import SPLIT_MODULUS, RandomWindows, is_validation
from ropelab.errors import RopeConfigError

# the split rule and the training batches live in ropelab.data (shared with ``ropelab finetune``);
# re-exported here under the names the lab has always used
__all__ = [
    "SEPARATOR",
    "SPLIT_MODULUS",
    "VOCAB_SIZE",
    "Corpus",
    "RandomWindows",
    "corpus_files",
    "corpus_info",
    "decode",
    "eval_windows",
    "is_validation",
    "load_corpus",
    "stdlib_dir",
]

#: the vocabulary: one token per byte value
VOCAB_SIZE = 256
#: byte between concatenated training files
SEPARATOR = b"\x00"


def stdlib_dir() -> Path:
    """The directory of the running Python's standard library source."""
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: str | Path | None = None) -> list[Path]:
    """Top-level ``*.py`` files of ``root`` (default: the stdlib), sorted by name."""
    root = Path(root) if root is not None else stdlib_dir()
    files = sorted((p for p in root.glob("*.py") if p.is_file()), key=lambda p: p.name)
    if not files:
        raise RopeConfigError(f"no *.py files in {root}: the lab corpus needs Python source files")
    return files


@dataclass(frozen=True)
class Corpus:
    """The files of the split, in name order, with their bytes."""

    train: tuple[tuple[str, bytes], ...]
    validation: tuple[tuple[str, bytes], ...]

    @property
    def digest(self) -> str:
        """sha256 over every (name, content) pair, train then validation: identifies the text."""
        h = hashlib.sha256()
        for name, data in (*self.train, *self.validation):
            h.update(name.encode("utf-8") + b"\x00" + len(data).to_bytes(8, "little") + data)
        return h.hexdigest()

    def train_tokens(self) -> torch.Tensor:
        """The training files joined with :data:`SEPARATOR`: uint8 ``[n]``."""
        joined = SEPARATOR.join(data for _, data in self.train)
        return torch.frombuffer(bytearray(joined), dtype=torch.uint8)


def load_corpus(root: str | Path | None = None) -> Corpus:
    """Read and split the corpus (deterministic: same files -> same split and bytes)."""
    train, val = [], []
    for path in corpus_files(root):
        (val if is_validation(path.name) else train).append((path.name, path.read_bytes()))
    if not train or not val:
        raise RopeConfigError(
            f"corpus split left {len(train)} training and {len(val)} validation files; it needs both"
        )
    return Corpus(tuple(train), tuple(val))


def corpus_info(corpus: Corpus) -> dict[str, object]:
    """What to record beside results and checkpoints: Python version, corpus hash, split sizes."""
    return {
        "python": platform.python_version(),
        "corpus_sha256": corpus.digest,
        "train_files": len(corpus.train),
        "train_bytes": sum(len(d) for _, d in corpus.train),
        "validation_files": len(corpus.validation),
        "validation_bytes": sum(len(d) for _, d in corpus.validation),
        "split": f"validation iff int(sha256(file name)[:8], 16) % {SPLIT_MODULUS} == 0",
    }


def eval_windows(corpus: Corpus, length: int, count: int) -> torch.Tensor:
    """Held-out windows of ``length + 1`` tokens: int64 ``[n, length + 1]``, ``n <= count``.

    Non-overlapping windows from the start of each validation file long enough for one, taken
    round-robin (the first window of every file in name order, then the second, ...), so a few
    windows already span many files. Each window is scored as a document of its own.
    """
    per_file = [
        [data[i : i + length + 1] for i in range(0, len(data) - length, length)]
        for _, data in corpus.validation
    ]
    chosen: list[bytes] = []
    depth = 0
    while len(chosen) < count and any(depth < len(w) for w in per_file):
        chosen.extend(w[depth] for w in per_file if depth < len(w))
        depth += 1
    chosen = chosen[:count]
    if not chosen:
        raise RopeConfigError(f"no validation file has {length + 1} bytes: use a shorter evaluation length")
    return torch.tensor([list(w) for w in chosen], dtype=torch.int64)


def decode(tokens: Sequence[int] | torch.Tensor) -> str:
    """Bytes back to text (invalid UTF-8 replaced): for looking at samples."""
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
