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

import numpy as np
import torch

from ropelab.evaluate.nll import PrefillChunk, prefill_for, token_nll


def _nll(model: object, ids: torch.Tensor, prefill_chunk: PrefillChunk) -> torch.Tensor:
    """:func:`token_nll` of ``ids`` ``[1, L]`` as ``[L-1]``, prefilled as :func:`prefill_for` says."""
    return token_nll(model, ids, prefill_chunk=prefill_for(prefill_chunk))[0]


@dataclass(frozen=True)
class Sums:
    """Summed NLL and token count of one document for one (metric, length) cell."""

    nll: float
    tokens: int


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
    lengths = sorted(lengths)
    out: dict[str, Sums] = {}
    shared = None if dynamic else _nll(model, ids[:, : lengths[-1]], prefill_chunk)
    prev = 0
    for length in lengths:
        nll = shared if shared is not None else _nll(model, ids[:, :length], prefill_chunk)
        prefix = nll[: length - 1]
        band = nll[max(prev - 1, 0) : length - 1]
        out[f"prefix:{length}"] = Sums(float(prefix.double().sum()), prefix.numel())
        out[f"band:{length}"] = Sums(float(band.double().sum()), band.numel())
        prev = length
    return out


def sliding_sums(
    model: object, ids: torch.Tensor, length: int, stride: int, *, prefill_chunk: PrefillChunk = None
) -> Sums:
    """Windows of ``length`` tokens every ``stride``; each token scored once, with the most context."""
    total, count, scored_until = 0.0, 0, 0  # scored_until: targets ids[1:scored_until+1] are done
    n = ids.shape[1]
    start = 0
    while True:
        stop = min(start + length, n)
        nll = _nll(model, ids[:, start:stop], prefill_chunk)  # targets start+1 .. stop-1
        first_new = max(scored_until - start, 0)
        new = nll[first_new:]
        total += float(new.double().sum())
        count += new.numel()
        scored_until = stop - 1
        if stop >= n:
            break
        start += stride
    return Sums(total, count)


def last_sums(
    model: object,
    ids: torch.Tensor,
    lengths: Sequence[int],
    score_last: int,
    *,
    prefill_chunk: PrefillChunk = None,
) -> dict[str, Sums]:
    """Loss on the same final ``score_last`` tokens given L tokens of context, per L."""
    end = max(lengths) + score_last
    out = {}
    for length in sorted(lengths):
        window = ids[:, end - score_last - length : end]
        nll = _nll(model, window, prefill_chunk)[-score_last:]
        out[f"last:{length}"] = Sums(float(nll.double().sum()), nll.numel())
    return out


@dataclass(frozen=True)
class CellStat:
    """Token-weighted mean loss of a cell across documents, with a bootstrap 95% interval."""

    loss: float
    low: float
    high: float
    tokens: int
    docs: int

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)


def aggregate(per_doc: Iterable[Sums], *, resamples: int = 1000, seed: int = 0) -> CellStat:
    """Token-weighted mean and a percentile bootstrap over documents."""
    cells = list(per_doc)
    nll = np.array([c.nll for c in cells], dtype=np.float64)
    tok = np.array([c.tokens for c in cells], dtype=np.float64)
    mean = float(nll.sum() / tok.sum())
    if len(cells) < 2 or resamples <= 0:
        return CellStat(mean, mean, mean, int(tok.sum()), len(cells))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(cells), size=(resamples, len(cells)))
    boot = nll[idx].sum(axis=1) / tok[idx].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return CellStat(mean, float(low), float(high), int(tok.sum()), len(cells))
