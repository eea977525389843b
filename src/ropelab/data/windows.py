"""Windows of a token stream: random training batches and fixed held-out windows.

:class:`RandomWindows` draws the training batches (of the lab's ``train``, its fine-tuning and
``ropelab finetune``); :func:`split_stream` cuts a held-out stream into evaluation windows.
Shapes: a stream is a 1-D tensor of token ids ``[n]`` (any integer dtype); windows are int64.
"""

from __future__ import annotations

import torch

from ropelab.errors import RopeConfigError


class RandomWindows:
    """Training batches: ``batch_size`` random windows of ``length + 1`` tokens from ``tokens``.

    The batch of step i depends only on (``seed``, i), so the data position is the step count:
    :meth:`state_dict` / :meth:`load_state_dict` resume the stream exactly, and two runs with one
    seed see the same data in the same order. ``next_batch`` returns (inputs, targets), int64
    ``[batch_size, length]`` each.
    """

    def __init__(self, tokens: torch.Tensor, *, batch_size: int, length: int, seed: int) -> None:
        if tokens.numel() <= length + 1:
            raise RopeConfigError(f"training text has {tokens.numel()} tokens; length {length} needs more")
        self.tokens = tokens
        self.batch_size = batch_size
        self.length = length
        self.seed = seed
        self.step = 0

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, self.tokens.numel() - self.length - 1, (self.batch_size,), generator=g)
        idx = starts[:, None] + torch.arange(self.length + 1)  # [b, length + 1]
        window = self.tokens[idx].long()
        return window[:, :-1], window[:, 1:]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise RopeConfigError(f"resume state has data seed {state['seed']}, this run {self.seed}")
        self.step = int(state["step"])


def split_stream(tokens: torch.Tensor, length: int, count: int) -> torch.Tensor:
    """The first ``count`` non-overlapping windows of ``length + 1`` tokens: int64 ``[n, length + 1]``.

    Consecutive windows share their boundary token (window i covers ``[i L, (i + 1) L]``), so every
    token of the first ``n L + 1`` is predicted exactly once.
    """
    n = min(count, (tokens.numel() - 1) // length)
    if n < 1:
        raise RopeConfigError(
            f"the held-out text has {tokens.numel()} tokens: not one evaluation window of {length + 1}"
            " (use a larger corpus, a shorter --length, or --eval-windows 0)"
        )
    return torch.stack([tokens[i * length : i * length + length + 1].long() for i in range(n)])
