"""xPos: RoPE with an exponential decay per pair (Sun et al. 2022, "A Length-Extrapolatable
Transformer", arXiv 2212.10554; reference implementation: microsoft/torchscale ``XPOS``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ropelab.attention.sdpa import check_qkv
from ropelab.encodings.base import PositionEncoding, causal_sdpa
from ropelab.errors import RopeConfigError
from ropelab.rope.apply import rotate
from ropelab.rope.frequencies import base_inv_freq

__all__ = ["XPos", "xpos_zeta"]


def xpos_zeta(head_dim: int) -> Tensor:
    """Per-pair decay bases ``zeta_i = (2i/d + 0.4) / 1.4``, i = 0 .. d/2-1, float64 ``[d/2]``."""
    return (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim + 0.4) / 1.4


class XPos(PositionEncoding):
    """RoPE whose query at position ``n`` is scaled by ``zeta_i^(n/gamma)`` and key at ``m`` by
    ``zeta_i^(-m/gamma)``, so the score of pair ``i`` decays as ``zeta_i^((n - m)/gamma)`` with distance.

    Numerics: only ``n - m`` reaches the score, so each call measures positions from a centre ``c`` (the
    midpoint of the positions in the call, as torchscale centres on the sequence): the factors are
    ``zeta^((n - c)/gamma)`` and ``zeta^(-(m - c)/gamma)``, bounded by ``zeta_0^(-span/(2 gamma))``
    instead of growing with the absolute position. Factors and angles are computed in float64; float16
    inputs are computed in float32 (the factors exceed float16's range beyond a few thousand tokens).
    """

    name = "xpos"

    def __init__(
        self, head_dim: int, *, base: float = 10000.0, gamma: float = 512.0, layout: str = "half"
    ) -> None:
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
            raise RopeConfigError(f"xPos head_dim must be an even integer >= 2, got {head_dim!r}")
        if not base > 1:
            raise RopeConfigError(f"xPos base must be > 1, got {base!r}")
        if not gamma > 0:
            raise RopeConfigError(f"xPos gamma (scale_base) must be > 0, got {gamma!r}")
        if layout not in ("half", "interleaved"):
            raise RopeConfigError(f"unknown rotary layout {layout!r}; valid choices: half, interleaved")
        self.head_dim, self.base, self.gamma, self.layout = head_dim, float(base), float(gamma), layout
        # plain attributes, not buffers: ``model.to(torch.bfloat16)`` must not round them
        self.inv_freq = base_inv_freq(self.base, head_dim).double()  # [d/2], float32 values
        self.zeta = xpos_zeta(head_dim)  # [d/2] float64

    def tables(self, positions: Tensor, centre: float, *, key: bool) -> tuple[Tensor, Tensor]:
        """Half tables ``[..., d/2]`` with the decay folded in: ``zeta^(+-(pos - c)/gamma) * cos/sin``."""
        pos = positions.to(torch.float64)[..., None]
        angles = pos * self.inv_freq.to(positions.device)
        exponent = (pos - centre) / self.gamma
        decay = self.zeta.to(positions.device) ** (-exponent if key else exponent)
        return (angles.cos() * decay).float(), (angles.sin() * decay).float()

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        check_qkv(q, k, v, q_positions, k_positions)
        if q.shape[-1] != self.head_dim:
            raise RopeConfigError(f"q has head dim {q.shape[-1]} but XPos has head_dim={self.head_dim}")
        every = torch.cat((q_positions.flatten(), k_positions.flatten()))
        centre = (int(every.min()) + int(every.max())) / 2 if every.numel() else 0.0
        dtype = q.dtype
        if dtype == torch.float16:
            q, k, v = q.float(), k.float(), v.float()
        q = rotate(q, *self.tables(q_positions, centre, key=False), layout=self.layout)
        k = rotate(k, *self.tables(k_positions, centre, key=True), layout=self.layout)
        return causal_sdpa(q, k, v, q_positions, k_positions).to(dtype)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "head_dim": self.head_dim,
            "base": self.base,
            "gamma": self.gamma,
            "layout": self.layout,
        }
