"""Optimiser and learning-rate schedule shared by training and fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    no_decay: Iterable[str] = (),
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with weight decay on matrices only (GPT-2 / nanoGPT practice).

    Parameters whose name starts with a prefix in ``no_decay`` are never decayed either: the lab
    passes ``encoding.`` so that a learned position table's rows that training never reaches stay
    exactly at their initial values.
    """
    prefixes = tuple(no_decay)
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.startswith(prefixes) else plain).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup: int, steps: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` x the peak at ``steps``.

    ``min_ratio=1`` gives a constant rate after warm-up.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
