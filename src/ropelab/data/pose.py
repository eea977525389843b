"""PoSE position ids: train for a long target length on short windows (positional skip-wise training).

Zhu et al. 2023, "PoSE: Efficient Context Window Extension of LLMs via Positional Skip-wise Training"
(arXiv 2309.10400, ICLR 2024). A training window of ``length`` tokens (contiguous text) is split into
``chunks`` pieces; chunk ``i`` keeps its tokens' order but all its position ids are shifted by a skip
``u_i``, so a short window shows the model position ids (absolute) and distances (relative) from the whole
target range ``[0, target)``. The scheme, from the paper's description and the authors' reference
implementation (github.com/dwzhu-pku/PoSE, ``src/train_pose.py`` at commit 43b43b3f, the default of two
chunks):

- chunk lengths: chunk ``i < N - 1`` takes ``l_i ~ U{1, ..., ceil(r_i / (N - i))}`` tokens of the ``r_i``
  still unassigned, the last chunk the rest (for N = 2: the first chunk ``U{1, ..., ceil(L / 2)}``, as the
  reference implementation draws it; N > 2 is ropelab's extension of that rule; every chunk gets at
  least one token);
- skips: ``u_0 = 0`` (the first chunk starts at position 0, as in the reference implementation, whose
  comment gives the reason: a more even coverage of long relative distances) and
  ``u_i ~ U{u_(i-1), ..., target - length}`` (discrete uniform, non-decreasing), so the ids are strictly
  increasing and the last one is at most ``target - 1``;
- the ids of token ``j`` (0-based in the window) in chunk ``i``: ``j + u_i``.

The text of a window (:class:`PoseWindows`): contiguous (the text does not skip), or skipped with the
positions (the window is a ``target``-token stretch of text read at the ids; the reference
implementation also draws its second chunk's text from further into the document). With
``target == length`` every skip is 0 and the ids are ``0..length-1``: ordinary fine-tuning.

The ids of a training step are a pure function of (``seed``, ``step``, batch, length, target, chunks):
:func:`pose_batch` draws them from a generator seeded from those, so a resumed run sees the ids an
uninterrupted one saw, and every rank of a data-parallel job computes the same global batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ropelab.data.windows import RandomWindows
from ropelab.errors import RopeConfigError

#: the paper's (and its reference implementation's) number of chunks per window
DEFAULT_CHUNKS = 2
#: the text of a PoSE window: contiguous, or skipped where the positions skip
POSE_TEXT = ("contiguous", "skipped")


def check_pose(length: int, target: int, chunks: int = DEFAULT_CHUNKS) -> None:
    """Raise :class:`RopeConfigError` (one line naming the flag) unless PoSE can run with these numbers."""
    for name, value in (("--length", length), ("--pose", target), ("--pose-chunks", chunks)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RopeConfigError(f"{name} must be an integer, got {value!r}")
    if chunks < 1:
        raise RopeConfigError(f"--pose-chunks must be >= 1, got {chunks}")
    if length < chunks:
        raise RopeConfigError(f"--length {length} cannot be split into {chunks} PoSE chunks (--pose-chunks)")
    if target < length:
        raise RopeConfigError(
            f"--pose {target} (the target length) must be >= --length {length} (the training window); "
            f"use --pose {length} or more, or drop --pose"
        )


def pose_position_ids(
    length: int, target: int, *, chunks: int = DEFAULT_CHUNKS, generator: torch.Generator | None = None
) -> Tensor:
    """One window's PoSE position ids: int64 ``[length]``, strictly increasing, inside ``[0, target)``.

    See the module doc for the scheme. ``generator``: the source of randomness (torch's default if None).
    """
    check_pose(length, target, chunks)
    ids = torch.arange(length, dtype=torch.int64)
    start, skip = 0, 0  # chunk 0: from token 0, no skip
    for i in range(chunks - 1):
        remaining = length - start
        most = -(-remaining // (chunks - i))  # ceil(r_i / (N - i)): leaves >= 1 token per later chunk
        start += int(torch.randint(1, most + 1, (1,), generator=generator))  # where chunk i + 1 begins
        skip = int(torch.randint(skip, target - length + 1, (1,), generator=generator))  # u_(i+1) >= u_i
        ids[start:] = torch.arange(start, length, dtype=torch.int64) + skip
    return ids


def pose_batch(
    rows: int, length: int, target: int, *, chunks: int = DEFAULT_CHUNKS, seed: int, step: int
) -> Tensor:
    """The PoSE position ids of training step ``step``: int64 ``[rows, length]``, one draw per window.

    A pure function of its arguments (a generator seeded from ``seed`` and ``step``, apart from the one
    that draws the windows' text), so resuming at ``step`` reproduces them.
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 2 + 1)
    return torch.stack([pose_position_ids(length, target, chunks=chunks, generator=g) for _ in range(rows)])


class PoseWindows:
    """Training batches with PoSE position ids: ``next_batch`` gives (inputs, targets, position_ids),
    int64 ``[batch_size, length]`` each, from the token stream ``tokens`` ``[n]``.

    ``text``: ``"contiguous"``: the text of :class:`RandomWindows` of ``length``
    tokens (the same as without PoSE for a seed), the ids from :func:`pose_batch` at the same step;
    ``"skipped"``: a random window of ``target`` tokens read at the ids, so the text skips
    where the positions do and every token's target is its true successor (the reference implementation
    also skips the text between its chunks, by an amount drawn apart from the position skip). With
    ``target == length`` both are the plain random windows. The position (state) is the step.
    """

    def __init__(
        self,
        tokens: Tensor,
        *,
        batch_size: int,
        length: int,
        target: int,
        seed: int,
        chunks: int = DEFAULT_CHUNKS,
        text: str = "contiguous",
    ) -> None:
        check_pose(length, target, chunks)
        if text not in POSE_TEXT:
            raise RopeConfigError(f"--pose-text must be one of {', '.join(POSE_TEXT)}, got {text!r}")
        span = target if text == "skipped" else length
        self.source = RandomWindows(tokens, batch_size=batch_size, length=span, seed=seed)
        self.length, self.target, self.chunks, self.text = length, target, chunks, text

    def batch_at(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets = self.source.batch_at(step)  # [b, span] each
        ids = pose_batch(
            inputs.shape[0], self.length, self.target, chunks=self.chunks, seed=self.source.seed, step=step
        )
        if self.text == "skipped":  # the long window read at the ids: [b, length]
            inputs, targets = inputs.gather(1, ids), targets.gather(1, ids)
        return inputs, targets, ids

    def next_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.batch_at(self.source.step)
        self.source.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
