"""The text a task prompt is made of: the haystack, the words and keys, the prompt frame, token counts.

- :class:`Haystack`: the noise a needle hides in, as *units* (a word with its trailing whitespace, at
  most :data:`UNIT_CHARS` characters of each) so a prompt can be cut to a token budget finely. The
  default is the passkey filler (RULER's "noise" haystack: the same few sentences repeated); any corpus
  of :func:`ropelab.data.load_corpus` (the standard library's source, a file, a folder) works too.
- :func:`pseudo_words`: pronounceable made-up words (consonant-vowel syllables), seeded; the words of
  the word tasks, never English, so no word has a prior the model could guess from.
- :func:`make_value`: a key or value as a number, a word or a UUID-like string.
- :class:`Frame`: what goes around the task's text: nothing (a base model's plain prompt) or a chat
  model's template (the user turn, then the assistant turn where the answer prefix starts).
- :class:`Measure`: the token count of a prompt as the runner encodes it (prefix and rest encoded
  apart, as :mod:`ropelab.evaluate.passkey` does, so the prefix's KV cache can be shared).
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ropelab.errors import RopeConfigError

#: the longest run of non-space (and of space) characters in one haystack unit
UNIT_CHARS = 16
#: the built-in haystack (the passkey filler of Mohtashami & Jaggi 2023; RULER's "noise" haystack)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
#: a haystack unit that ends a sentence (the next one starts one)
SENTENCE_END = re.compile(r"([.!?]\s|\n)\s*$")
_UNIT = re.compile(rf"\S{{1,{UNIT_CHARS}}}\s{{0,{UNIT_CHARS}}}|\s{{1,{UNIT_CHARS}}}")


@dataclass(frozen=True)
class Haystack:
    """Noise text, cycled as long as a prompt needs. ``name`` goes into results; ``text`` is the source."""

    name: str
    text: str

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise RopeConfigError(f"haystack {self.name!r} has no text")

    @cached_property
    def units(self) -> tuple[str, ...]:
        return tuple(_UNIT.findall(self.text))

    def take(self, start: int, count: int) -> str:
        """Units ``start .. start + count - 1``, cycling through the text."""
        n = len(self.units)
        return "".join(self.units[(start + i) % n] for i in range(count))

    def sentence_start(self, start: int, n: int, reach: int = 40) -> int:
        """The largest ``m <= n`` (and ``>= n - reach``) such that unit ``start + m`` begins a sentence
        (the unit before it ends in ``. ``, ``! ``, ``? `` or a line break); ``n`` if none does."""
        for m in range(n, max(0, n - reach) - 1, -1):
            if m == 0 or SENTENCE_END.search(self.units[(start + m - 1) % len(self.units)]):
                return m
        return n

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def default_haystack() -> Haystack:
    return Haystack("filler", FILLER)


def corpus_haystack(spec: str, *, max_chars: int = 2_000_000) -> Haystack:
    """The documents of :func:`ropelab.data.load_corpus` (``stdlib``, a file, a folder, ``hf:NAME``)
    joined by blank lines, at most ``max_chars`` characters (enough for 16k tokens many times over)."""
    from ropelab.data import load_corpus

    if spec == "filler":
        return default_haystack()
    parts, size = [], 0
    for doc in load_corpus(spec):
        parts.append(doc.text)
        size += len(doc.text)
        if size >= max_chars:
            break
    return Haystack(spec, "\n\n".join(parts)[:max_chars])


_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def pseudo_words(rng: random.Random, count: int, *, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """``count`` distinct made-up lowercase words of 2-3 consonant-vowel syllables (70 syllables: over
    300 000 words), in the order ``rng`` draws them."""
    out: dict[str, None] = {}
    while len(out) < count:
        n = rng.randint(*syllables)
        out.setdefault("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n)))
    return list(out)


#: the kinds of key and value: what :func:`make_value` draws
KINDS = ("number", "word", "uuid")


def make_value(rng: random.Random, kind: str, *, digits: int = 7) -> str:
    """One key or value: a ``digits``-digit number (no leading zero), a made-up word, or a UUID-like
    string (``uuid4`` layout, hex from ``rng``)."""
    if kind == "number":
        return str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    if kind == "word":
        return pseudo_words(rng, 1, syllables=(3, 3))[0]
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise RopeConfigError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


def distinct_values(
    rng: random.Random, kind: str, count: int, *, digits: int = 7, avoid: frozenset[str] = frozenset()
) -> list[str]:
    """``count`` values of ``kind``, distinct, none of them in ``avoid`` and none inside another (a
    scorer that looks for substrings must never find one answer inside another)."""
    out: list[str] = []
    for _ in range(1000 * count):
        if len(out) == count:
            return out
        v = make_value(rng, kind, digits=digits)
        if v not in avoid and all(v not in o and o not in v for o in [*out, *avoid]):
            out.append(v)
    raise RopeConfigError(f"cannot draw {count} distinct {kind} values with {digits} digits; use more digits")


# ---------------------------------------------------------------------------- frame and measure
@dataclass(frozen=True)
class Frame:
    """What surrounds a task's text: ``head`` + user text + ``mid`` + answer prefix.

    Plain (a base model): both empty. Chat: the template's text before the user's message and between
    its end and the assistant's turn (:func:`chat_frame`).
    """

    head: str = ""
    #: plain: a line break between the question and the answer prefix
    mid: str = "\n"
    kind: str = "plain"


_SENTINEL = "\u2063ROPELAB_USER_MESSAGE\u2063"


def chat_frame(tokenizer: Any) -> Frame:
    """The tokenizer's chat template around one user message, with the assistant's turn opened
    (``add_generation_prompt=True``); plain for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return Frame()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    head, found, mid = text.partition(_SENTINEL)
    if not found:
        raise RopeConfigError("the tokenizer's chat template drops the user's message; pass chat=False")
    return Frame(head, mid, "chat")


def frame_for(tokenizer: Any, chat: bool | None = None) -> Frame:
    """``chat=None``: the chat template where the tokenizer has one, else plain; True/False forces it."""
    if chat is False:
        return Frame()
    frame = chat_frame(tokenizer)
    if chat and frame.kind != "chat":
        raise RopeConfigError("chat=True but the tokenizer has no chat_template; pass chat=None or False")
    return frame


def token_counter(tokens: Any) -> Callable[[str], int]:
    """``str -> token count``: from a tokenizer (``add_special_tokens=False``), a counting function as
    given, or ``"bytes"`` (UTF-8 bytes: the lab's byte-level models)."""
    if tokens == "bytes":
        return lambda text: len(text.encode())
    if hasattr(tokens, "encode"):
        return lambda text: len(tokens(text, add_special_tokens=False)["input_ids"])
    if callable(tokens):
        return tokens
    raise RopeConfigError("give a tokenizer, a function str -> token count, or 'bytes'")


@dataclass(frozen=True)
class Measure:
    """The token count of a prompt in a frame: the prefix (frame head + shared text) and the rest (the
    rest of the user text, the frame's middle, the answer prefix) counted apart, as they are encoded."""

    count: Callable[[str], int]
    frame: Frame = field(default_factory=Frame)

    def parts(self, prefix: str, rest: str, answer_prefix: str) -> tuple[str, str]:
        return self.frame.head + prefix, rest + self.frame.mid + answer_prefix

    def __call__(self, prefix: str, rest: str, answer_prefix: str) -> int:
        a, b = self.parts(prefix, rest, answer_prefix)
        return self.count(a) + self.count(b)


def as_measure(tokens: Any) -> Measure:
    """A :class:`Measure` as given, else one over :func:`token_counter` in the plain frame."""
    return tokens if isinstance(tokens, Measure) else Measure(token_counter(tokens))
