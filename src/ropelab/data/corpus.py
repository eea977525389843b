"""Text corpora for evaluation, as a list of documents.

``stdlib`` (default): the ``*.py`` files at the top of the Python standard library, sorted by name
(present on every machine with Python, no download). ``FILE``: one document. ``DIR``: every text
file below it, sorted by path. ``hf:NAME[:split]``: a dataset through ``datasets.load_dataset``
(a hub name where a hub is reachable, or a local dataset folder); its ``text`` column.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ropelab.errors import RopeConfigError

_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".html", ".tex", ".c", ".h", ""}


@dataclass(frozen=True)
class Document:
    """One document: a name (file or dataset row) and its text."""

    name: str
    text: str


def stdlib_files() -> list[Path]:
    """Top-level ``*.py`` files of this Python's standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file())


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def load_corpus(spec: str = "stdlib", *, max_docs: int | None = None, min_chars: int = 1) -> list[Document]:
    """Documents of ``spec`` (see module docstring), at most ``max_docs``, each >= ``min_chars`` long."""
    if spec == "stdlib":
        docs = [Document(p.name, _read(p)) for p in stdlib_files()]
    elif spec.startswith("hf:"):
        docs = _hf_documents(spec[3:])
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            docs = [Document(path.name, _read(path))]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
            docs = [Document(str(p.relative_to(path)), _read(p)) for p in files]
        else:
            raise RopeConfigError(
                f"corpus {spec!r} not found: give 'stdlib', a file, a folder, or hf:NAME[:split]"
            )
    docs = [d for d in docs if len(d.text) >= min_chars]
    if not docs:
        raise RopeConfigError(f"corpus {spec!r} has no document of at least {min_chars} characters")
    return docs[:max_docs] if max_docs else docs


def _hf_documents(spec: str) -> list[Document]:
    name, _, split = spec.partition(":")
    split = split or "test"
    try:
        import datasets
    except ImportError:
        raise RopeConfigError("--corpus hf:... needs the datasets package: pip install datasets") from None
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RopeConfigError(f"cannot load dataset {name!r} split {split!r}: {first}") from None
    column = "text" if "text" in data.column_names else None
    if column is None:
        raise RopeConfigError(
            f"dataset {name!r} has no 'text' column (columns: {', '.join(data.column_names)})"
        )
    return [Document(f"{name}[{i}]", row) for i, row in enumerate(data[column]) if isinstance(row, str)]
