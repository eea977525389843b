"""Text corpora for evaluation, as a list of documents.

``stdlib`` (default): the ``*.py`` files at the top of the Python standard library, sorted by name
(present on every machine with Python, no download). ``pydoc``: English prose, the Python reference
manual's topics that every Python ships for ``help()`` (``pydoc_data.topics``), in topic order, cut at
topic boundaries into documents of at least 200,000 characters (Python 3.11: two of about 50,000 SmolLM2
tokens and a remainder of 12,500). ``FILE``: one document. ``DIR``: every text file below it, sorted by
path. ``hf:NAME[:split]``: a dataset through ``datasets.load_dataset`` (a hub name where a hub is
reachable, or a local dataset folder); its ``text`` column.

A file is text if it has no NUL byte and at most 1% of it is not UTF-8: a binary ``FILE`` is refused,
binary files in a ``DIR`` are skipped (their perplexity would measure nothing).
"""

from __future__ import annotations

import sysconfig
from collections.abc import Callable
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


#: at most this fraction of a text file's characters may be undecodable (U+FFFD after decoding)
_MAX_BAD_FRACTION = 0.01


def _read(path: Path) -> str | None:
    """The file's text, or None if it is binary (a NUL byte, or more than 1% not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" not in text:
        return text
    bad = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
    return None if bad > _MAX_BAD_FRACTION * max(len(text), 1) else text


def load_corpus(spec: str = "stdlib", *, max_docs: int | None = None, min_chars: int = 1) -> list[Document]:
    """Documents of ``spec`` (see module docstring), at most ``max_docs``, each >= ``min_chars`` long."""
    if spec == "stdlib":
        docs = _documents(stdlib_files(), lambda p: p.name)
    elif spec == "pydoc":
        docs = pydoc_documents()
    elif spec.startswith("hf:"):
        docs = _hf_documents(spec[3:])
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            text = _read(path)
            if text is None:
                raise RopeConfigError(f"corpus file {spec!r} is not text (binary data); give a text file")
            docs = [Document(path.name, text)]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
            docs = _documents(files, lambda p: str(p.relative_to(path)))
            if not docs:
                raise RopeConfigError(
                    f"corpus folder {spec!r} has no text file ({', '.join(sorted(_TEXT_SUFFIXES - {''}))} "
                    "or no suffix; binary files are skipped)"
                )
        else:
            raise RopeConfigError(
                f"corpus {spec!r} not found: give 'stdlib', 'pydoc', a file, a folder, or hf:NAME[:split]"
            )
    docs = [d for d in docs if len(d.text) >= min_chars]
    if not docs:
        raise RopeConfigError(f"corpus {spec!r} has no document of at least {min_chars} characters")
    return docs[:max_docs] if max_docs else docs


#: the ``pydoc`` corpus's documents: consecutive topics until at least this many characters
PYDOC_DOCUMENT_CHARS = 200_000


def pydoc_documents(min_chars: int = PYDOC_DOCUMENT_CHARS) -> list[Document]:
    """English text offline: ``pydoc_data.topics.topics`` (topic -> the reference manual's text on it), in
    sorted topic order, consecutive topics joined (a blank line between them) until a document has at
    least ``min_chars`` characters; a shorter remainder is its own last document. Named
    ``pydoc[i]:FIRST..LAST`` (the first and last topic)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise RopeConfigError(
            "corpus 'pydoc' needs the standard library's pydoc_data package, which this Python lacks; "
            "give 'stdlib', a file or a folder"
        ) from None
    docs: list[Document] = []
    part: list[str] = []
    names: list[str] = []
    for name in sorted(topics):
        part.append(topics[name].strip())
        names.append(name)
        if sum(len(t) for t in part) >= min_chars:
            docs.append(Document(f"pydoc[{len(docs)}]:{names[0]}..{names[-1]}", "\n\n".join(part)))
            part, names = [], []
    if part:
        docs.append(Document(f"pydoc[{len(docs)}]:{names[0]}..{names[-1]}", "\n\n".join(part)))
    return docs


def _documents(files: list[Path], name: Callable[[Path], str]) -> list[Document]:
    """One document per text file (binary files skipped)."""
    docs = []
    for path in files:
        text = _read(path)
        if text is not None:
            docs.append(Document(name(path), text))
    return docs


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
