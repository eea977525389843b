"""Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError

__all__ = ["Sinusoidal", "sinusoidal_table"]


def sinusoidal_table(positions: Tensor, d_model: int, *, base: float = 10000.0) -> Tensor:
    """``PE(pos, 2i) = sin(pos / base^(2i/d))``, ``PE(pos, 2i+1) = cos(pos / base^(2i/d))``.

    ``positions`` ``[s]`` or ``[b, s]`` (any non-negative values) -> float32 ``[..., d_model]``, channels
    interleaved sin, cos, sin, cos, ... (an odd ``d_model`` ends with a sin channel). Angles in float64,
    computed on the fly: there is no maximum length.
    """
    half = (d_model + 1) // 2
    inv_freq = base ** (-torch.arange(0, 2 * half, 2, dtype=torch.float64, device=positions.device) / d_model)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # [..., ceil(d/2)]
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # [..., 2 * ceil(d/2)]
    return table[..., :d_model].float()


class Sinusoidal(PositionEncoding):
    """Fixed sinusoids added to the token embeddings (Vaswani et al. 2017, sec. 3.5).

    ``embed(x [b, s, d_model], positions [s] | [b, s])`` returns ``x + PE(positions)``; ``attend`` is plain
    causal attention.
    """

    name = "sinusoidal"

    def __init__(self, d_model: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise RopeConfigError(f"d_model must be a positive integer, got {d_model!r}")
        if not base > 1:
            raise RopeConfigError(f"sinusoidal base must be > 1, got {base!r}")
        self.d_model, self.base = d_model, float(base)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise RopeConfigError(
                f"embeddings have {x.shape[-1]} channels but Sinusoidal has d_model={self.d_model}"
            )
        return x + sinusoidal_table(positions, self.d_model, base=self.base).to(x.dtype)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "d_model": self.d_model, "base": self.base}
