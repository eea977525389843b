"""ALiBi: attention with linear biases (Press et al. 2021, "Train Short, Test Long", arXiv 2108.12409)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ropelab.attention.methods import alibi_attention, alibi_bias, alibi_slopes
from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError

__all__ = ["ALiBi", "alibi_slopes"]


class ALiBi(PositionEncoding):
    """No position embedding; ``-m_h * (i - j)`` added to the score of query ``i`` and key ``j``.

    One fixed slope per head (:func:`alibi_slopes`, exact for any head count). ``attend`` runs the
    blockwise engine, so no ``[h, L, L]`` bias is ever built; ``block_size`` is queries per block
    (``None``: automatic).
    """

    name = "alibi"

    def __init__(self, n_heads: int, *, block_size: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.block_size = n_heads, block_size
        # a plain attribute, not a buffer: ``model.to(torch.bfloat16)`` must not round the slopes
        self._slopes = {torch.device("cpu"): alibi_slopes(n_heads)}  # device -> float32 [n_heads]

    @property
    def slopes(self) -> Tensor:
        """float32 ``[n_heads]``."""
        return self._slopes[torch.device("cpu")]

    def _slopes_on(self, device: torch.device) -> Tensor:
        if device not in self._slopes:
            self._slopes[device] = self.slopes.to(device)
        return self._slopes[device]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        if q.shape[1] != self.n_heads:
            raise RopeConfigError(
                f"ALiBi was built for n_heads={self.n_heads} but q has {q.shape[1]} heads; "
                "build it with the model's number of query heads"
            )
        slopes = self._slopes_on(q.device)
        return alibi_attention(q, k, v, q_positions, k_positions, slopes, block_size=self.block_size)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "n_heads": self.n_heads}
        if self.block_size is not None:
            out["block_size"] = self.block_size
        return out

    def bias(self, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        """The bias ``-m_h (i - j)``, float32 ``[b|1, h, s_q, s_k]``; for inspection (``attend`` never
        builds it)."""
        return alibi_bias(self._slopes_on(q_positions.device), q_positions, k_positions, causal=False)
