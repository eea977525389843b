"""Corpora that need no download: ``stdlib`` (Python code) and ``pydoc`` (English prose)."""

from __future__ import annotations

import pytest

from ropelab.data.corpus import PYDOC_DOCUMENT_CHARS, load_corpus
from ropelab.errors import RopeConfigError


def test_pydoc_is_english_prose_in_long_documents() -> None:
    pytest.importorskip("pydoc_data.topics")
    from pydoc_data.topics import topics

    docs = load_corpus("pydoc")
    assert len(docs) >= 2
    assert all(len(d.text) >= PYDOC_DOCUMENT_CHARS for d in docs[:-1])
    # every topic's text is in exactly one document, in sorted topic order, nothing else added
    joined = "\n\n".join(d.text for d in docs)
    assert joined == "\n\n".join(topics[name].strip() for name in sorted(topics))
    assert docs[0].name.startswith("pydoc[0]:") and docs == load_corpus("pydoc")  # deterministic
    words = docs[0].text.split()
    assert sum(w.lower() in ("the", "a", "is", "of", "and", "to") for w in words) > 0.1 * len(words)
    assert load_corpus("pydoc", max_docs=1, min_chars=PYDOC_DOCUMENT_CHARS) == docs[:1]


def test_unknown_corpus_names_the_choices() -> None:
    with pytest.raises(RopeConfigError, match="'stdlib', 'pydoc', a file, a folder"):
        load_corpus("no-such-corpus")
