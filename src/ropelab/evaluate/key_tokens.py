"""Key tokens: the tokens a model predicts much better with the long context than with a short window.

LongPPL (Fang et al. 2024, "What is wrong with perplexity for long-context language modeling?",
arXiv 2410.23771, ICLR 2025; semantics read from the paper's section 3 and its code, PKU-ML/LongPPL
``LongPPL/longppl.py`` at commit 9a1ed449): for each token ``x_i``,

- the long-short difference ``LSD(x_i) = log P(x_i | long context) - log P(x_i | short context)``, the
  log-probability gain from the long context, i.e. ``nll_short - nll_long``;
- the long-context likelihood ``LCL(x_i) = log P(x_i | long context) = -nll_long``;

and ``x_i`` is a key token when ``LSD > alpha`` and ``LCL > beta``, with the paper's defaults
``alpha = 2`` and ``beta = -2`` (here ``gain = 2`` and ``max_loss = 2``: ``nll_short - nll_long > 2`` and
``nll_long < 2``; both strict, as in the code). The key-token loss of a method is its mean NLL over the
key tokens (LongPPL is its exponential).

The short context follows the paper's code: targets are taken in blocks of ``block`` tokens (default
``short // 4``; the code's 4096 and 1024), and each block is scored in one window that starts ``short``
tokens before the block, so a target's short context holds between ``short`` and ``short + block - 1``
tokens. The first block's window starts at the document's first token (its context *is* the long one),
so targets before ``short + block`` are never key tokens; their short NLL is ``NaN`` here.

Which model identifies the key tokens: the paper uses one fixed evaluator model for every model it ranks,
so that every model is scored on the same tokens. ropelab does the same with the sweep's baseline method
(``--baseline``, default ``none``: the unmodified model) at the long context: every method's key-token
loss is over one set of tokens per document, so the losses are comparable and can be paired by document.
A method's own model would pick its own tokens, and the criterion ``nll_long < max_loss`` would then
select tokens it already predicts well: a broken method would look good on the few tokens it gets right.
Beyond the trained length the unmodified model's long context is itself degraded; choose a baseline that
holds there (e.g. ``--baseline yarn(factor=4)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate.nll import PrefillChunk, prefill_for, token_nll


@dataclass(frozen=True)
class KeyTokenRule:
    """How key tokens are found: the short window, the block of targets per window, the thresholds."""

    short: int = 4096
    block: int | None = None
    gain: float = 2.0
    max_loss: float = 2.0

    def __post_init__(self) -> None:
        if int(self.short) != self.short or self.short < 1:
            raise RopeConfigError(f"the key-token short window (--key-tokens) must be >= 1, got {self.short}")
        if self.block is not None and (int(self.block) != self.block or self.block < 1):
            raise RopeConfigError(f"the key-token block must be >= 1 tokens, got {self.block}")
        if not (math.isfinite(self.gain) and self.gain >= 0):
            raise RopeConfigError(f"the key-token gain threshold must be >= 0 nats, got {self.gain}")
        if not self.max_loss > 0:
            raise RopeConfigError(f"the key-token max_loss must be > 0 nats, got {self.max_loss}")

    @property
    def step(self) -> int:
        """Targets per short window: ``block``, default ``short // 4`` (at least 1)."""
        return self.block or max(1, self.short // 4)

    def settings(self) -> dict[str, Any]:
        return {"short": self.short, "block": self.step, "gain": self.gain, "max_loss": self.max_loss}


def key_token_mask(
    long_nll: torch.Tensor, short_nll: torch.Tensor, *, gain: float = 2.0, max_loss: float = 2.0
) -> torch.Tensor:
    """LongPPL's criterion on NLL tensors of one shape: ``short - long > gain`` and ``long < max_loss``
    (bool, same shape). A ``NaN`` short NLL (no shorter context) is never a key token."""
    return ((short_nll - long_nll) > gain) & (long_nll < max_loss)


def short_context_nll(
    model: Any, ids: torch.Tensor, rule: KeyTokenRule, *, prefill_chunk: PrefillChunk = None
) -> torch.Tensor:
    """NLL of each target ``ids[:, t]`` given its short window (module doc): float32 ``[b, L-1]``, index
    ``t - 1``, ``NaN`` for the targets before ``rule.short + rule.step`` (no shorter window)."""
    length, short, step = ids.shape[1], rule.short, rule.step
    out = torch.full((ids.shape[0], length - 1), math.nan, dtype=torch.float32, device=ids.device)
    start = step  # the window of block 0 starts at token 0: the long context itself
    while start + short < length:
        stop = min(start + short + step, length)
        nll = token_nll(model, ids[:, start:stop], prefill_chunk=prefill_for(prefill_chunk))
        # window targets start+1 .. stop-1; the block's are start+short .. stop-1
        out[:, start + short - 1 : stop - 1] = nll[:, short - 1 :]
        start += step
    return out


@dataclass(frozen=True)
class KeyTokens:
    """What :func:`find_key_tokens` found in ``ids`` ``[b, L]``; index ``j`` is target ``ids[:, j + 1]``."""

    mask: torch.Tensor  # bool [b, L-1]
    long_nll: torch.Tensor  # float32 [b, L-1]
    short_nll: torch.Tensor  # float32 [b, L-1], NaN before short + block

    def positions(self, row: int = 0) -> list[int]:
        """The key targets of document ``row`` as indices into its NLL (target ``ids[row, j + 1]``)."""
        return [int(j) for j in torch.nonzero(self.mask[row]).flatten()]


def find_key_tokens(
    model: Any, ids: torch.Tensor, rule: KeyTokenRule | None = None, *, prefill_chunk: PrefillChunk = None
) -> KeyTokens:
    """The key tokens of ``ids`` ``[b, L]`` as ``model`` (with whatever method it carries) sees them: its
    NLL with the whole prefix as context against its NLL in the short windows of ``rule`` (module doc)."""
    rule = rule or KeyTokenRule()
    long_nll = token_nll(model, ids, prefill_chunk=prefill_for(prefill_chunk)).float()
    short_nll = short_context_nll(model, ids, rule, prefill_chunk=prefill_chunk)
    mask = key_token_mask(long_nll, short_nll, gain=rule.gain, max_loss=rule.max_loss)
    return KeyTokens(mask, long_nll, short_nll)


def mask_of(positions: list[int], length: int) -> torch.Tensor:
    """The bool mask ``[length]`` with ``positions`` set (a stored key-token row back to a mask)."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[positions] = True
    return mask
