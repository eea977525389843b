"""Corpora (the Python standard library offline, local files and folders, HF datasets), the held-out
split by document name, and windows of token streams."""

from ropelab.data.corpus import Document, load_corpus, stdlib_files
from ropelab.data.split import SPLIT_MODULUS, is_validation
from ropelab.data.windows import RandomWindows, split_stream

__all__ = [
    "SPLIT_MODULUS",
    "Document",
    "RandomWindows",
    "is_validation",
    "load_corpus",
    "split_stream",
    "stdlib_files",
]
