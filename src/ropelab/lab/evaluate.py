"""Held-out loss by position: the two views of "does the model work past its trained length".

Both score the same held-out windows (:func:`ropelab.lab.data.eval_windows`, ``n`` windows of
``16 T + 1`` tokens) for every model and method, and weight every token equally.

- **length view** (ALiBi paper, Table 2): the first ``L`` tokens of each window, one forward each;
  the loss of the targets at positions ``< T`` ("inside" the trained length) and ``>= T``
  ("beyond") reported separately, and per ``T``-wide block.
- **context view** (ReRoPE's table; RESULTS.md "same tokens, growing context"): the *same* last
  ``T`` tokens of each window, given ``L`` tokens of context ending there (a forward over window
  positions ``[16T - L, 16T)``). A model that uses longer context holds or improves as ``L``
  grows; one that breaks gets worse. Text difficulty cannot differ between lengths here.

Position p scores the prediction of token p + 1 from tokens 0..p (so p + 1 tokens of context).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ropelab.lab.model import TinyDecoder


@torch.no_grad()
def position_nll(model: TinyDecoder, inputs: Tensor, targets: Tensor, *, max_tokens: int = 16384) -> Tensor:
    """Summed NLL (nats, float64) of each position over the rows: ``[s]`` from ``[n, s]`` inputs/targets.

    Rows are run ``max(1, max_tokens // s)`` at a time to bound memory.
    """
    n, s = inputs.shape
    rows = max(1, max_tokens // s)
    total = torch.zeros(s, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for i in range(0, n, rows):
        total += model.token_nll(inputs[i : i + rows], targets[i : i + rows]).double().sum(0)
    model.train(was_training)
    return total


def _mean(x: Tensor, count: int) -> float | None:
    return float(x.sum()) / count if count else None


def length_nll(model: TinyDecoder, windows: Tensor, length: int) -> Tensor:
    """Summed NLL per position of the first ``length`` positions of every window: float64 ``[length]``."""
    return position_nll(model, windows[:, :length], windows[:, 1 : length + 1])


def summarize(nll: Tensor, n: int, trained: int) -> dict[str, Any]:
    """Token-weighted means of a per-position NLL sum over ``n`` windows: all, inside/beyond, per block."""
    length = nll.numel()
    inside, beyond = nll[:trained], nll[trained:]
    blocks = [
        _mean(nll[i : i + trained], n * nll[i : i + trained].numel()) for i in range(0, length, trained)
    ]
    return {
        "loss": _mean(nll, n * length),
        "loss_inside": _mean(inside, n * inside.numel()),
        "loss_beyond": _mean(beyond, n * beyond.numel()),
        "tokens_inside": n * inside.numel(),
        "tokens_beyond": n * beyond.numel(),
        "block_loss": blocks,
    }


def length_view(model: TinyDecoder, windows: Tensor, length: int, trained: int) -> dict[str, Any]:
    """Loss of the first ``length`` positions of every window, inside/beyond ``trained`` and per block."""
    return summarize(length_nll(model, windows, length), windows.shape[0], trained)


def context_view(
    model: TinyDecoder, windows: Tensor, length: int, trained: int, *, full: Tensor | None = None
) -> dict[str, Any]:
    """Loss of each window's last ``trained`` tokens given ``length`` tokens of context ending there.

    ``full``: the :func:`length_nll` of the whole window, if already computed (at ``length`` equal
    to the window it is the same forward, so it is reused).
    """
    n, total = windows.shape[0], windows.shape[1] - 1
    if length == total and full is not None:
        nll = full
    else:
        start = total - length
        nll = position_nll(model, windows[:, start:total], windows[:, start + 1 : total + 1])
    last = nll[-trained:]
    return {"loss_last": _mean(last, n * last.numel()), "tokens_last": n * last.numel()}


def perplexity(loss: float | None) -> float | None:
    return math.exp(loss) if loss is not None else None
