"""Corpora: the Python standard library (offline default), local files and folders, HF datasets."""

from ropelab.data.corpus import Document, load_corpus, stdlib_files

__all__ = ["Document", "load_corpus", "stdlib_files"]
