"""Perplexity against context length on a real model and corpus (RESULTS.md, "Evaluation protocols").

Three protocols, each per document and token-weighted across documents, with bootstrap confidence
intervals over documents:

- ``prefix``: the first L tokens of each document. For methods that do not depend on the length
  (static), one forward pass at the longest length gives every shorter length (causal attention:
  the loss at position t does not see later tokens); dynamic methods get one pass per length.
  Reported as the mean over the whole prefix (``loss@L``) and over the band since the previous
  length (``band``), so loss beyond the trained length is visible on its own.
- ``sliding``: windows of L tokens with stride S; only tokens not scored before count.
- ``last``: the same last N tokens of each document given L tokens of context before them, for
  every L: the cleanest test of whether a method lets the model *use* a longer context.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ropelab.evaluate.nll import PrefillChunk, prefill_for, token_nll
from ropelab.report.stats import MIN_UNITS


def _nll(model: object, ids: torch.Tensor, prefill_chunk: PrefillChunk) -> torch.Tensor:
    """:func:`token_nll` of ``ids`` ``[b, L]`` (``[b, L-1]``), prefilled as :func:`prefill_for` says."""
    return token_nll(model, ids, prefill_chunk=prefill_for(prefill_chunk))


@dataclass(frozen=True)
class Sums:
    """Summed NLL (nats) and token count of one document for one (metric, length) cell, and ``bytes``: the
    UTF-8 byte count of the cell's scored target tokens decoded as one text (:func:`target_bytes`), so
    bits per byte are ``nll / (ln 2 * bytes)``. ``None`` where no tokenizer was given, and for ``key``
    cells (key tokens are scattered, not one text)."""

    nll: float
    tokens: int
    bytes: int | None = None

    @property
    def bpb(self) -> float | None:
        """Bits per byte, comparable across tokenizers; ``None`` without bytes."""
        return bits_per_byte(self.nll, self.bytes)


def bits_per_byte(nll: float, n_bytes: int | None) -> float | None:
    """``nll / (ln 2 * n_bytes)``: summed NLL in nats over the UTF-8 bytes it predicts, in bits per byte."""
    if not n_bytes:
        return None
    return nll / (math.log(2) * n_bytes)


def target_bytes(tokenizer: Any, ids: Sequence[int] | torch.Tensor) -> int:
    """UTF-8 bytes of the target tokens ``ids`` decoded together as one text (the convention of bits per
    byte here: the bytes of the decoded scored targets, special tokens kept, no clean-up of spaces).

    Decoded as one span, not token by token: a byte-level BPE splits a multi-byte character over tokens
    that decode to replacement characters one at a time."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    text = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return len(text.encode("utf-8"))


def prefix_sums(
    model: object,
    ids: torch.Tensor,
    lengths: Sequence[int],
    *,
    dynamic: bool,
    prefill_chunk: PrefillChunk = None,
) -> dict[str, Sums]:
    """``prefix`` and ``band`` cells for one document ``ids`` ``[1, >= max(lengths)]``.

    ``prefill_chunk`` (all three protocols): how each pass runs, see :func:`ropelab.evaluate.nll.prefill_for`.
    """
    return prefix_sums_rows(model, ids[:1], lengths, dynamic=dynamic, prefill_chunk=prefill_chunk)[0]


def prefix_sums_rows(
    model: object,
    ids: torch.Tensor,
    lengths: Sequence[int],
    *,
    dynamic: bool,
    prefill_chunk: PrefillChunk = None,
    key_masks: torch.Tensor | None = None,
) -> list[dict[str, Sums]]:
    """:func:`prefix_sums` of each row of ``ids`` ``[b, >= max(lengths)]`` (documents of equal length,
    scored together: one forward per pass for the whole batch).

    ``key_masks``: bool ``[b, >= max(lengths) - 1]``, each document's key tokens
    (:mod:`ropelab.evaluate.key_tokens`; index ``j`` is target ``j + 1``): adds ``key:L`` cells, the NLL
    over the key tokens among the first L tokens, from the same pass as ``prefix:L``."""
    lengths = sorted(lengths)
    out: list[dict[str, Sums]] = [{} for _ in range(ids.shape[0])]
    shared = None if dynamic else _nll(model, ids[:, : lengths[-1]], prefill_chunk)
    prev = 0
    for length in lengths:
        nll = shared if shared is not None else _nll(model, ids[:, :length], prefill_chunk)
        for row, cells in zip(nll, out, strict=True):
            prefix = row[: length - 1]
            band = row[max(prev - 1, 0) : length - 1]
            cells[f"prefix:{length}"] = Sums(float(prefix.double().sum()), prefix.numel())
            cells[f"band:{length}"] = Sums(float(band.double().sum()), band.numel())
        if key_masks is not None:
            for row, mask, cells in zip(nll, key_masks, out, strict=True):
                key = row[: length - 1][mask[: length - 1].to(row.device)]
                cells[f"key:{length}"] = Sums(float(key.double().sum()), key.numel())
        prev = length
    return out


def sliding_sums(
    model: object, ids: torch.Tensor, length: int, stride: int, *, prefill_chunk: PrefillChunk = None
) -> Sums:
    """Windows of ``length`` tokens every ``stride``; each token scored once, with the most context."""
    return sliding_sums_rows(model, ids[:1], length, stride, prefill_chunk=prefill_chunk)[0]


def sliding_sums_rows(
    model: object, ids: torch.Tensor, length: int, stride: int, *, prefill_chunk: PrefillChunk = None
) -> list[Sums]:
    """:func:`sliding_sums` of each row of ``ids`` ``[b, n]`` (the same windows for every row)."""
    total = torch.zeros(ids.shape[0], dtype=torch.float64)
    count, scored_until = 0, 0  # scored_until: targets ids[:, 1:scored_until+1] are done
    n = ids.shape[1]
    start = 0
    while True:
        stop = min(start + length, n)
        nll = _nll(model, ids[:, start:stop], prefill_chunk)  # targets start+1 .. stop-1
        first_new = max(scored_until - start, 0)
        new = nll[:, first_new:]
        total += new.double().sum(dim=1).cpu()
        count += new.shape[1]
        scored_until = stop - 1
        if stop >= n:
            break
        start += stride
    return [Sums(float(t), count) for t in total]


def last_sums(
    model: object,
    ids: torch.Tensor,
    lengths: Sequence[int],
    score_last: int,
    *,
    prefill_chunk: PrefillChunk = None,
) -> dict[str, Sums]:
    """Loss on the same final ``score_last`` tokens given L tokens of context, per L."""
    return last_sums_rows(model, ids[:1], lengths, score_last, prefill_chunk=prefill_chunk)[0]


def last_sums_rows(
    model: object,
    ids: torch.Tensor,
    lengths: Sequence[int],
    score_last: int,
    *,
    prefill_chunk: PrefillChunk = None,
) -> list[dict[str, Sums]]:
    """:func:`last_sums` of each row of ``ids`` ``[b, >= max(lengths) + score_last]``."""
    end = max(lengths) + score_last
    out: list[dict[str, Sums]] = [{} for _ in range(ids.shape[0])]
    for length in sorted(lengths):
        window = ids[:, end - score_last - length : end]
        nll = _nll(model, window, prefill_chunk)[:, -score_last:]
        for row, cells in zip(nll, out, strict=True):
            cells[f"last:{length}"] = Sums(float(row.double().sum()), row.numel())
    return out


@dataclass(frozen=True)
class CellStat:
    """Token-weighted mean loss of a cell across documents, with a bootstrap 95% interval over documents
    (``low``/``high`` ``None`` below :data:`ropelab.report.stats.MIN_UNITS` documents: no interval), and
    bits per byte where every document has its byte count. ``loss`` is ``nan`` when no token was scored
    (a ``key`` cell with no key token)."""

    loss: float
    low: float | None
    high: float | None
    tokens: int
    docs: int
    bytes: int | None = None

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)

    @property
    def bpb(self) -> float | None:
        return bits_per_byte(self.loss * self.tokens, self.bytes)


def aggregate(per_doc: Iterable[Sums], *, resamples: int = 1000, seed: int = 0) -> CellStat:
    """Token-weighted mean and a percentile bootstrap over documents (none below 3 documents)."""
    cells = list(per_doc)
    nll = np.array([c.nll for c in cells], dtype=np.float64)
    tok = np.array([c.tokens for c in cells], dtype=np.float64)
    n_bytes = None if any(c.bytes is None for c in cells) else sum(int(c.bytes or 0) for c in cells)
    if tok.sum() == 0:
        return CellStat(math.nan, None, None, 0, len(cells), n_bytes)
    mean = float(nll.sum() / tok.sum())
    if len(cells) < MIN_UNITS or resamples <= 0:
        return CellStat(mean, None, None, int(tok.sum()), len(cells), n_bytes)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(cells), size=(resamples, len(cells)))
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of documents with no key token
        boot = nll[idx].sum(axis=1) / tok[idx].sum(axis=1)
    low, high = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5])
    return CellStat(mean, float(low), float(high), int(tok.sum()), len(cells), n_bytes)
