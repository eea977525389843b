"""The held-out split by document name: the same rule for the lab's byte corpus and ``ropelab finetune``.

A document is held out for validation when the first 8 hex digits of ``sha256(name)``, read as an
integer, are divisible by :data:`SPLIT_MODULUS` (about 1 in 10). Only the name decides, so the split
of a given file is the same on every machine and Python version (on CPython 3.11's standard library:
18 of 168 top-level files).
"""

from __future__ import annotations

import hashlib

#: split rule: sha256(name)[:8] as an integer, modulo this, equal to 0 -> validation
SPLIT_MODULUS = 10


def is_validation(name: str) -> bool:
    """The split rule: True for held-out documents (about 1 in :data:`SPLIT_MODULUS`)."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % SPLIT_MODULUS == 0
