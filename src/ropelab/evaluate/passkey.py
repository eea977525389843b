"""Passkey retrieval (Mohtashami & Jaggi 2023, arXiv 2305.16300; the PI and YaRN papers' protocol).

Filler text repeated to the target length, one line "The pass key is K. Remember it. K is the pass
key." at a chosen depth, then "What is the pass key? The pass key is"; greedy decoding; a trial
succeeds if the first number generated equals K. The filler before the key line is the same for
every trial of a (length, depth) cell, so its KV cache is computed once per cell and copied.
"""

from __future__ import annotations

import copy
import inspect
import random
import re
from dataclasses import dataclass
from typing import Any

import torch

from ropelab.errors import RopeConfigError

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? The pass key is"
INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there. "
)


def key_line(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


@dataclass(frozen=True)
class Prompt:
    """Token ids of one trial: the shared prefix (intro + filler up to the depth) and the rest."""

    prefix: list[int]
    rest: list[int]
    key: int

    @property
    def length(self) -> int:
        return len(self.prefix) + len(self.rest)


def build_prompt(tokenizer: Any, length: int, depth: float, key: int) -> Prompt:
    """A prompt of about ``length`` tokens, the key line at ``depth`` (0 = start, 1 = end) of the filler."""
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    intro, filler, question, line = enc(INTRO), enc(FILLER), enc(" " + QUESTION), enc(key_line(key))
    budget = max(0, length - len(intro) - len(question) - len(line))
    repeats = budget // len(filler) + 1
    body = (filler * repeats)[:budget]
    cut = round(depth * len(body))
    # cut at a sentence boundary so the key line is not glued into a word
    cut = cut - cut % len(filler) if depth < 1 else len(body)
    return Prompt(prefix=intro + body[:cut], rest=line + body[cut:] + question, key=key)


def _cache_arg(model: Any) -> str:
    """The name ``model.forward`` takes its KV cache by: transformers 5.x renamed ``past_key_values``
    to ``cache`` (the old name works there but warns), older versions know only the old one."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    """The KV cache of a forward's output, by either name (reading the old name warns in 5.x)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def first_number(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


@torch.no_grad()
def greedy_continue(
    model: Any, prefix_cache: Any, prefix_len: int, rest: list[int], new_tokens: int
) -> list[int]:
    """Greedy tokens after ``prefix`` (whose cache is given) + ``rest``."""
    return greedy_continue_batch(model, prefix_cache, prefix_len, [rest], new_tokens)[0]


@torch.no_grad()
def greedy_continue_batch(
    model: Any, prefix_cache: Any, prefix_len: int, rests: list[list[int]], new_tokens: int
) -> list[list[int]]:
    """Greedy tokens after ``prefix`` + each of ``rests``, decoded together (a batch of ``len(rests)``).

    The rests must have one token length (no padding: the attention-level methods refuse a padded
    batch, and equal lengths keep every row's positions those of a batch of one). The batch-1
    ``prefix_cache`` is copied and repeated along the batch.
    """
    if len({len(r) for r in rests}) != 1:
        raise RopeConfigError("greedy_continue_batch needs continuations of one token length (no padding)")
    b = len(rests)
    if new_tokens < 1:
        return [[] for _ in rests]
    cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
    if cache is not None and b > 1:
        cache.batch_repeat_interleave(b)
    device = next(model.parameters()).device
    ids = torch.tensor(rests, dtype=torch.long, device=device)
    n = len(rests[0])
    positions = torch.arange(prefix_len, prefix_len + n, device=device)[None].expand(b, n)
    # logits_to_keep=1: only the last position's logits, not [len(rest), vocab] thrown away
    name = _cache_arg(model)
    out = model(input_ids=ids, **{name: cache}, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache, generated = _cache_of(out), []
    nxt = out.logits[:, -1].argmax(-1)  # [b]
    pos = prefix_len + n
    for i in range(new_tokens):
        generated.append(nxt.tolist())
        if i == new_tokens - 1:
            break  # the next token's forward pass would go unused
        out = model(
            input_ids=nxt[:, None],
            **{name: cache},
            position_ids=torch.full((b, 1), pos, device=device),
            use_cache=True,
        )
        cache, pos = _cache_of(out), pos + 1
        nxt = out.logits[:, -1].argmax(-1)
    return [list(tokens) for tokens in zip(*generated, strict=True)]


@torch.no_grad()
def prefix_cache(model: Any, prefix: list[int]) -> Any:
    if not prefix:
        return None
    ids = torch.tensor([prefix], device=next(model.parameters()).device)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # the cache is the point
    return _cache_of(out)


def cell_prompts(tokenizer: Any, length: int, depth: float, trials: int, seed: int) -> list[Prompt]:
    """The ``trials`` prompts of a (length, depth) cell, their keys seeded by (seed, length, depth).

    Raises :class:`RopeConfigError` if ``length`` is too short for the prompt's fixed text (intro,
    key line, question): such a prompt would be longer than the length it is labelled with.
    """
    if trials < 1:
        raise RopeConfigError(f"trials must be >= 1, got {trials}")
    if not 0 <= depth <= 1:
        raise RopeConfigError(f"depth must lie in [0, 1], got {depth}")
    rng = random.Random(f"{seed}:{length}:{depth}")
    keys = [rng.randint(10000, 99999) for _ in range(trials)]
    prompts = [build_prompt(tokenizer, length, depth, k) for k in keys]
    longest = max(p.length for p in prompts)
    if longest > length:
        raise RopeConfigError(
            f"passkey length {length} is shorter than the passkey prompt's fixed text ({longest} tokens "
            f"with this tokenizer); use --lengths of at least {longest}"
        )
    return prompts


def batches(rests: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``rests`` in decoding batches: at most ``batch_size`` each, one token length per batch
    (trials whose key line tokenizes to another length go in a batch of their own length)."""
    if batch_size < 1:
        raise RopeConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    by_length: dict[int, list[int]] = {}
    for i, rest in enumerate(rests):
        by_length.setdefault(len(rest), []).append(i)
    return [
        group[start : start + batch_size]
        for group in by_length.values()
        for start in range(0, len(group), batch_size)
    ]


def run_cell(
    model: Any,
    tokenizer: Any,
    length: int,
    depth: float,
    trials: int,
    seed: int,
    new_tokens: int = 8,
    *,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Accuracy of one (length, depth) cell over ``trials`` seeded keys, sharing the prefix cache;
    ``batch_size`` trials of one token length decoded together (the same answers as one at a time)."""
    prompts = cell_prompts(tokenizer, length, depth, trials, seed)
    keys = [p.key for p in prompts]
    shared = prompts[0].prefix
    assert all(p.prefix == shared for p in prompts)  # the key line comes after the shared filler
    cache = prefix_cache(model, shared)
    tokens: list[list[int]] = [[] for _ in prompts]
    for group in batches([p.rest for p in prompts], batch_size):
        rests = [prompts[i].rest for i in group]
        for i, out in zip(
            group, greedy_continue_batch(model, cache, len(shared), rests, new_tokens), strict=True
        ):
            tokens[i] = out
    hits, answers = 0, []
    for p, generated in zip(prompts, tokens, strict=True):
        answer = first_number(tokenizer.decode(generated))
        answers.append(answer)
        hits += int(answer == p.key)
    return {
        "length": length,
        "depth": depth,
        "trials": trials,
        "accuracy": hits / trials,
        "prompt_tokens": prompts[0].length,
        "keys": keys,
        "answers": answers,
    }
