"""Seeded task prompts in the style of RULER (Hsieh et al. 2024, arXiv 2404.06654; NVIDIA/RULER's
``scripts/data/synthetic``, read for the task designs, none of its text copied).

Every generator is a pure function ``(tokens, length, depth, seed, *, layout, haystack, **options) ->``
:class:`Sample`: no model, no global state. ``tokens`` is a tokenizer, a function ``str -> token count``,
``"bytes"``, or a :class:`~ropelab.tasks.text.Measure` (which also carries the chat frame).

- **niah** (needle in a haystack): ``keys`` needles "one secret number for KEY is VALUE", ``values``
  values per key, ``queries`` of the keys asked. single: 1/1/1; multi-key: 4 keys, 1 asked (the others
  are distractors); multi-value: 1 key, 4 values (all asked); multi-query: 4 keys, all asked. Keys and
  values are numbers, made-up words or UUID-like strings.
- **variable tracking**: ``chains`` chains ``VAR A = 12345. VAR B = A. ...`` of ``hops`` hops,
  interleaved through the haystack; asked: every name bound to the first chain's value.
- **common words**: a numbered list where ``common`` words occur ``common_freq`` times and the others
  ``rare_freq`` times; asked: the common words.
- **frequent words**: "coded" made-up words drawn from a Zipf law (exponent ``alpha``); asked: the
  ``top`` most frequent (the draw is cut where the top ``top`` counts are strictly above the next).

Length: every prompt is at most ``length`` tokens as the runner encodes it (``Measure``) and short of it
by at most :data:`TOLERANCE` tokens for the needle tasks (the haystack is cut to the character) and at most
one list entry (:data:`LIST_TOLERANCE`) for the aggregation tasks; ``Sample.tokens`` is the count.

Depth and the shared prefix: in the needle tasks the first needle sits at ``depth`` (0 = the start of the
haystack, 1 = its end less a margin of a quarter of the needles' tokens, so that every trial's needles
fit after the shared prefix), moved back to the start of its sentence, and the others at
``layout``-seeded places after it (each at a sentence start). Everything before the first
needle (instruction + haystack) depends only on ``(length, depth, layout, options, haystack, tokens)``,
not on ``seed``: the trials of a cell share it, so its KV cache is computed once per cell.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.tasks.text import (
    SENTENCE_END,
    Haystack,
    Measure,
    as_measure,
    default_haystack,
    distinct_values,
    pseudo_words,
)

#: the most tokens a needle-task prompt falls short of its length (BPE: a character adds at most a token
#: or two; checked by the tests)
TOLERANCE = 4
#: prompt styles of the needle tasks: English instructions and question, or Python-like lines (the lab)
STYLES = ("prose", "code")
#: the most tokens an aggregation prompt (common / frequent words) falls short: one list entry
LIST_TOLERANCE = 16


@dataclass(frozen=True)
class Sample:
    """One task prompt and its answers.

    The prompt is ``frame.head + prefix + rest + frame.mid + answer_prefix`` (:class:`~ropelab.tasks.text.
    Measure.parts`); ``prefix`` is shared by the trials of a cell.
    """

    task: str
    options: dict[str, Any]
    length: int
    depth: float | None
    seed: int
    #: the instruction and the haystack before the first needle
    prefix: str
    #: the needles, the haystack after them and the question
    rest: str
    #: the start of the answer the model continues (in the assistant's turn for a chat model)
    answer_prefix: str
    #: every string the answer must contain (RULER's references)
    answers: tuple[str, ...]
    #: strings in the prompt that look like answers and are not (other keys' values, other chains' names)
    distractors: tuple[str, ...]
    #: the prompt's token count, as :attr:`~ropelab.tasks.text.Measure` counts it
    tokens: int
    frame: str = "plain"
    #: the RULER metric of the task: ``all`` (fraction of answers found) or ``part`` (any one found)
    metric: str = "all"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user_text(self) -> str:
        return self.prefix + self.rest


def _largest(ok: Callable[[int], bool], hi: int) -> int:
    """The largest ``n`` in ``[0, hi]`` with ``ok(n)`` (``ok`` true at 0, monotone); -1 if ``ok(0)`` fails."""
    if not ok(0):
        return -1
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _too_short(task: str, length: int, need: int) -> RopeConfigError:
    return RopeConfigError(
        f"task {task}: length {length} is shorter than its fixed text ({need} tokens with this tokenizer); "
        f"use lengths of at least {need + 16}"
    )


def _sentence_start(units: Sequence[str], i: int, reach: int = 40) -> int:
    """The last sentence start at or before unit ``i`` (within ``reach`` units), else ``i``."""
    for j in range(min(i, len(units)), max(0, i - reach) - 1, -1):
        if j == 0 or SENTENCE_END.search(units[j - 1]):
            return j
    return i


def _weave(units: Sequence[str], inserts: Sequence[str], places: Sequence[float], tail: str = "") -> str:
    """``inserts[0]``, then the haystack ``units`` with ``inserts[1:]`` at fractions ``places`` of them
    (each moved back to the start of its sentence, where the haystack has sentences)."""
    spots = (_sentence_start(units, round(p * len(units))) for p in places)
    at = sorted(zip(spots, inserts[1:], strict=True), key=lambda x: x[0])
    out, j = [inserts[0]] if inserts else [], 0
    for i, unit in enumerate(units):
        while j < len(at) and at[j][0] == i:
            out.append(at[j][1])
            j += 1
        out.append(unit)
    out.extend(text for _, text in at[j:])
    return "".join(out) + tail


def _needle_prompt(
    task: str,
    measure: Measure,
    length: int,
    depth: float,
    haystack: Haystack,
    layout: random.Random,
    *,
    head: str,
    inserts: Sequence[str],
    reference: tuple[Sequence[str], str, str],
    question: str,
    answer_prefix: str,
) -> tuple[str, str, int]:
    """(prefix, rest, tokens): ``head`` + haystack up to ``depth``, then ``inserts`` (the first at
    ``depth``, the others at ``layout``-drawn places after it) in the rest of the haystack, then the
    question; as long as fits in ``length`` tokens, the last haystack unit cut to the character.

    The prefix's haystack length is set from ``reference`` (inserts, question and answer prefix drawn from
    the layout, the same for every trial of a cell), so it does not depend on this trial's needles.
    """
    if not 0 <= depth <= 1:
        raise RopeConfigError(f"depth must lie in [0, 1], got {depth}")
    start = layout.randrange(len(haystack.units))
    places = sorted(layout.random() for _ in inserts[1:])
    ref_inserts, ref_question, ref_answer = reference
    ref_rest = "".join(ref_inserts) + ref_question
    fixed = measure(head, ref_rest, ref_answer)
    if fixed > length:
        raise _too_short(task, length, fixed)
    # a margin for trials whose needles take more tokens than the reference's (at depth 1 they would not
    # fit after the reference's prefix): a quarter of the reference's needles and question, 8 at least
    slack = 8 + (fixed - measure(head, "", "")) // 4
    target = fixed + depth * max(0, length - fixed - slack)
    k = _largest(
        lambda n: measure(head + haystack.take(start, n), ref_rest, ref_answer) <= target, 4 * length
    )
    k = haystack.sentence_start(start, k)
    rest0 = "".join(inserts) + question
    if measure(head + haystack.take(start, k), rest0, answer_prefix) > length:  # longer needles than the
        k = _largest(  # reference's at depth ~1: this trial's prefix is shorter (it then shares no cache)
            lambda n: measure(head + haystack.take(start, n), rest0, answer_prefix) <= length, k
        )
        if k < 0:
            raise _too_short(task, length, measure(head, rest0, answer_prefix))
    prefix = head + haystack.take(start, k)
    after = start + k

    def rest_of(n: int, chars: int = 0) -> str:
        units = list(haystack.units[(after + i) % len(haystack.units)] for i in range(n))
        cut = haystack.units[(after + n) % len(haystack.units)][:chars]
        return _weave(units, inserts, places, cut + question)

    m = _largest(lambda n: measure(prefix, rest_of(n), answer_prefix) <= length, 4 * length)
    c = _largest(lambda n: measure(prefix, rest_of(m, n), answer_prefix) <= length, 2 * 16)
    rest = rest_of(m, c)
    return prefix, rest, measure(prefix, rest, answer_prefix)


# ------------------------------------------------------------------------------------------ niah
_NOUNS = {"number": "number", "word": "word", "uuid": "code"}


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def niah(
    tokens: Any,
    length: int,
    depth: float,
    seed: int,
    *,
    layout: int = 0,
    haystack: Haystack | None = None,
    keys: int = 1,
    values: int = 1,
    queries: int = 1,
    key: str = "word",
    value: str = "number",
    digits: int = 7,
    style: str = "prose",
    task: str = "niah",
) -> Sample:
    """Needle(s) in a haystack (see the module doc). ``seed``: the keys and values; ``layout``: where the
    haystack starts and where the needles after the first go (shared by the trials of a cell).

    ``style="code"`` (the lab's byte-level models, trained on Python source): no instruction, the needle
    a line ``key = value``, the prompt ending in ``key = `` (one key and value, a word key)."""
    if not (keys >= 1 and values >= 1 and 1 <= queries <= keys):
        raise RopeConfigError(
            f"niah needs keys >= 1, values >= 1, 1 <= queries <= keys; got {keys}, {values}, {queries}"
        )
    if style not in STYLES or (style == "code" and (queries, values, key) != (1, 1, "word")):
        raise RopeConfigError(f"niah style must be one of {STYLES} (code: one query and value, word keys)")
    measure, haystack = as_measure(tokens), haystack or default_haystack()
    rng, lay = random.Random(f"niah:{seed}"), random.Random(f"niah-layout:{layout}")
    noun = _NOUNS.get(value, value)

    def draw(r: random.Random) -> tuple[list[str], list[list[str]]]:
        names = distinct_values(r, key, keys, digits=digits)
        flat = distinct_values(r, value, keys * values, digits=digits, avoid=frozenset(names))
        return names, [flat[i * values : (i + 1) * values] for i in range(keys)]

    def needles(names: list[str], vals: list[list[str]], r: random.Random) -> list[str]:
        pairs = [(n, v) for n, vs in zip(names, vals, strict=True) for v in vs]
        r.shuffle(pairs)
        if style == "code":
            return [f"{n} = {v}\n" for n, v in pairs]
        return [f"One secret {noun} for {n} is {v}. " for n, v in pairs]

    plural = queries > 1 or values > 1
    what = f"all the secret {noun}s" if plural else f"the secret {noun}"

    def ask(names: list[str], asked: list[int]) -> tuple[str, str]:
        about = _and([names[i] for i in asked])
        if style == "code":
            return "", f"{about} = "
        return (
            f"\n\nWhat {'are' if plural else 'is'} {what} for {about} in the text above?",
            f"The secret {noun}{'s' if plural else ''} for {about} {'are' if plural else 'is'}:",
        )

    names, vals = draw(rng)
    inserts = needles(names, vals, rng)
    asked = sorted(rng.sample(range(keys), queries))
    question, answer_prefix = ask(names, asked)
    ref_names, ref_vals = draw(lay)
    reference = (needles(ref_names, ref_vals, lay), *ask(ref_names, sorted(lay.sample(range(keys), queries))))
    head = (
        f"Some secret {noun}s are hidden in the long text below. Read it and remember them: you will be "
        f"asked about them afterwards.\n\n"
        if style == "prose"
        else ""
    )
    prefix, rest, n = _needle_prompt(
        task,
        measure,
        length,
        depth,
        haystack,
        lay,
        head=head,
        inserts=inserts,
        reference=reference,
        question=question,
        answer_prefix=answer_prefix,
    )
    answers = tuple(v for i in asked for v in vals[i])
    distractors = tuple(v for i in range(keys) if i not in asked for v in vals[i])
    options = {
        "keys": keys,
        "values": values,
        "queries": queries,
        "key": key,
        "value": value,
        "digits": digits,
        "style": style,
    }
    return Sample(
        task,
        options,
        length,
        depth,
        seed,
        prefix,
        rest,
        answer_prefix,
        answers,
        distractors,
        n,
        measure.frame.kind,
    )


# ----------------------------------------------------------------------------- variable tracking
def _names(rng: random.Random, count: int) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < count:
        out.setdefault("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)))
    return list(out)


def variable_tracking(
    tokens: Any,
    length: int,
    depth: float,
    seed: int,
    *,
    layout: int = 0,
    haystack: Haystack | None = None,
    chains: int = 2,
    hops: int = 4,
    digits: int = 5,
    style: str = "prose",
    task: str = "vt",
) -> Sample:
    """Chains of assignments through the haystack (see the module doc); the first chain is asked.

    ``style="code"`` (the lab's byte-level models): lines ``NAME = value`` / ``NAME = OTHER``, no
    instruction, the prompt ending in ``assert LAST == `` where ``LAST`` is the first chain's last name:
    the answer is the chain's value (a digit string), the distractors the other chains' values."""
    if chains < 1 or hops < 1:
        raise RopeConfigError(f"variable tracking needs chains >= 1 and hops >= 1; got {chains}, {hops}")
    if style not in STYLES:
        raise RopeConfigError(f"variable tracking style must be one of {STYLES}, got {style!r}")
    measure, haystack = as_measure(tokens), haystack or default_haystack()
    rng, lay = random.Random(f"vt:{seed}"), random.Random(f"vt-layout:{layout}")

    def draw(r: random.Random) -> tuple[list[list[str]], list[str], list[str]]:
        names = _names(r, chains * (hops + 1))
        vals = distinct_values(r, "number", chains, digits=digits)
        groups = [names[c * (hops + 1) : (c + 1) * (hops + 1)] for c in range(chains)]
        var, end = ("", "\n") if style == "code" else ("VAR ", ". ")
        lines = [
            [f"{var}{g[0]} = {v}{end}", *(f"{var}{g[i]} = {g[i - 1]}{end}" for i in range(1, hops + 1))]
            for g, v in zip(groups, vals, strict=True)
        ]
        order = [c for c in range(chains) for _ in range(hops + 1)]
        r.shuffle(order)  # interleave the chains, each in its own order
        pos = [0] * chains
        merged = []
        for c in order:
            merged.append(lines[c][pos[c]])
            pos[c] += 1
        return groups, vals, merged

    def ask(value: str, last: str) -> tuple[str, str]:
        if style == "code":
            return "", f"assert {last} == "
        return (
            f"\n\nFind every variable that is assigned the value {value} in the text above, directly or "
            "through other variables.",
            f"The variables assigned the value {value} are:",
        )

    groups, vals, inserts = draw(rng)
    question, answer_prefix = ask(vals[0], groups[0][-1])
    ref_groups, ref_vals, ref_inserts = draw(lay)
    reference = (ref_inserts, *ask(ref_vals[0], ref_groups[0][-1]))
    head = (
        "Remember every variable assignment (the statements that start with VAR) in the long text below: "
        "you will be asked about them afterwards.\n\n"
        if style == "prose"
        else ""
    )
    prefix, rest, n = _needle_prompt(
        task,
        measure,
        length,
        depth,
        haystack,
        lay,
        head=head,
        inserts=inserts,
        reference=reference,
        question=question,
        answer_prefix=answer_prefix,
    )
    options = {"chains": chains, "hops": hops, "digits": digits, "style": style}
    answers = tuple(groups[0]) if style == "prose" else (vals[0],)
    distractors = tuple(name for g in groups[1:] for name in g) if style == "prose" else tuple(vals[1:])
    return Sample(
        task,
        options,
        length,
        depth,
        seed,
        prefix,
        rest,
        answer_prefix,
        answers,
        distractors,
        n,
        measure.frame.kind,
        extra={"value": vals[0]},
    )


# ---------------------------------------------------------------------------------- aggregation
def _fit_list(
    task: str,
    measure: Measure,
    length: int,
    head: str,
    body: Callable[[int], str],
    answer_prefix: str,
    hi: int,
) -> tuple[int, str, int]:
    """The most entries ``n <= hi`` whose prompt ``head`` + ``body(n)`` fits in ``length``."""
    n = _largest(lambda k: measure(head, body(k), answer_prefix) <= length, hi)
    if n < 1:
        raise _too_short(task, length, measure(head, body(1), answer_prefix))
    text = body(n)
    return n, text, measure(head, text, answer_prefix)


def common_words(
    tokens: Any,
    length: int,
    depth: float | None = None,
    seed: int = 0,
    *,
    layout: int = 0,
    haystack: Haystack | None = None,
    common: int = 10,
    common_freq: int | None = None,
    rare_freq: int | None = None,
    task: str = "cwe",
) -> Sample:
    """A numbered list of made-up words: ``common`` words ``common_freq`` times each, the rest (as many as
    fit) ``rare_freq`` times; asked: the common ones. Defaults follow the length as RULER's do (30 and 3
    at long lengths): ``common_freq = clamp(length // 200, 3, 30)``,
    ``rare_freq = max(1, common_freq // 10)``.
    ``depth``, ``layout`` and ``haystack`` are unused (the list is the whole context)."""
    measure = as_measure(tokens)
    cf = common_freq if common_freq is not None else min(30, max(3, length // 200))
    rf = rare_freq if rare_freq is not None else max(1, cf // 10)
    if not 1 <= rf < cf:
        raise RopeConfigError(f"common words need 1 <= rare_freq < common_freq; got {rf}, {cf}")
    rng = random.Random(f"cwe:{seed}")
    words = pseudo_words(rng, common + length)
    top, rare = words[:common], words[common:]
    order_seed = rng.random()

    def body(n: int) -> str:
        entries = [w for w in top for _ in range(cf)] + [w for w in rare[:n] for _ in range(rf)]
        random.Random(f"{order_seed}:{n}").shuffle(entries)
        return " ".join(f"{i + 1}. {w}" for i, w in enumerate(entries)) + question

    head = "Below is a numbered list of words. Some of the words occur many times in it.\n\n"
    question = f"\n\nWhat are the {common} most common words in the list above?"
    answer_prefix = f"The {common} most common words in the list are:"
    n, rest, count = _fit_list(task, measure, length, head, body, answer_prefix, len(rare))
    options = {"common": common, "common_freq": cf, "rare_freq": rf}
    return Sample(
        task,
        options,
        length,
        None,
        seed,
        head,
        rest,
        answer_prefix,
        tuple(top),
        tuple(rare[:n]),
        count,
        measure.frame.kind,
        extra={"rare": n},
    )


def frequent_words(
    tokens: Any,
    length: int,
    depth: float | None = None,
    seed: int = 0,
    *,
    layout: int = 0,
    haystack: Haystack | None = None,
    top: int = 3,
    alpha: float = 2.0,
    vocab: int = 1000,
    task: str = "fwe",
) -> Sample:
    """ "Coded" made-up words drawn i.i.d. from a Zipf law ``p(rank r) ~ r^-alpha`` over ``vocab`` words
    (RULER's fwe: alpha 2); asked: the ``top`` most frequent. The draw is cut at the most words that fit
    and then shortened until the ``top``-th count is strictly above the next (the answer is unique)."""
    measure = as_measure(tokens)
    if top < 1 or vocab <= top or alpha <= 0:
        raise RopeConfigError(
            f"frequent words need top >= 1, vocab > top, alpha > 0; got {top}, {vocab}, {alpha}"
        )
    rng = random.Random(f"fwe:{seed}")
    words = pseudo_words(rng, vocab)
    weights = [1 / (r + 1) ** alpha for r in range(vocab)]
    draws = rng.choices(words, weights=weights, k=2 * length)
    head = "Below is a text of coded words. Some of the words occur more often than others.\n\n"
    question = f"\n\nWhat are the {top} most frequent coded words in the text above?"
    answer_prefix = f"The {top} most frequent coded words are:"

    def body(n: int) -> str:
        return " ".join(draws[:n]) + question

    n, rest, _ = _fit_list(task, measure, length, head, body, answer_prefix, len(draws))
    while n > top:
        ranked = Counter(draws[:n]).most_common(top + 1)
        if len(ranked) > top and ranked[top - 1][1] > ranked[top][1]:
            break
        n -= 1
    ranked = Counter(draws[:n]).most_common(top + 1)
    if len(ranked) <= top or ranked[top - 1][1] <= ranked[top][1]:
        raise RopeConfigError(
            f"task {task}: length {length} holds too few words for a unique top {top}; use a longer length"
        )
    rest = body(n)
    answers = tuple(w for w, _ in ranked[:top])
    options = {"top": top, "alpha": alpha, "vocab": vocab}
    return Sample(
        task,
        options,
        length,
        None,
        seed,
        head,
        rest,
        answer_prefix,
        answers,
        (ranked[top][0],),
        measure(head, rest, answer_prefix),
        measure.frame.kind,
        extra={"words": n, "counts": [c for _, c in ranked]},
    )
