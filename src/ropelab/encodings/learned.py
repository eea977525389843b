"""Learned absolute position embeddings (as in GPT-2 / BERT; Gehring et al. 2017, arXiv 1705.03122)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError

__all__ = ["Learned"]


class Learned(PositionEncoding):
    """A trained table ``[max_positions, d_model]`` added to the token embeddings.

    Initialised ``normal(0, 0.02)`` (GPT-2). Positions outside ``[0, max_positions)`` cannot be
    embedded: the table has no row for them (this is why learned encodings do not extrapolate).
    """

    name = "learned"

    def __init__(self, d_model: int, max_positions: int) -> None:
        super().__init__()
        for key, value in (("d_model", d_model), ("max_positions", max_positions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RopeConfigError(f"{key} must be a positive integer, got {value!r}")
        self.d_model, self.max_positions = d_model, max_positions
        self.table = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        if positions.numel():
            top, low = int(positions.max()), int(positions.min())
            if top >= self.max_positions:
                raise RopeConfigError(
                    f"position {top} is past the learned table (max_positions={self.max_positions}); "
                    f"use shorter inputs or build Learned with a larger max_positions"
                )
            if low < 0:
                raise RopeConfigError(f"positions must be >= 0, got {low}")
        return x + self.table(positions).to(x.dtype)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "d_model": self.d_model, "max_positions": self.max_positions}
