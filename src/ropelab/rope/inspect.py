"""The per-dimension view of a RoPE method: what each rotary pair does at a target length.

RoPE writes position n as d/2 "digits" n * theta_i (Su, kexue.fm 9675: the base-beta view with
beta = b^(2/d)). A pair whose angle completed at least one full turn inside the trained length L0
has seen every angle; a slower pair has only seen angles up to L0 * theta_i, and a longer input
shows it angles it never saw unless the method slows it down (interpolates).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ropelab.errors import RopeConfigError
from ropelab.rope.core import Rope
from ropelab.rope.frequencies import base_inv_freq

#: relative tolerance under which a frequency counts as unchanged
_SAME = 1e-6


@dataclass(frozen=True)
class PairView:
    """One rotary pair i of a method at a target length T."""

    pair: int
    wavelength: float  # 2*pi / theta_i of the original RoPE, in tokens
    scaled_wavelength: float  # 2*pi / theta'_i of the method
    scale: float  # theta'_i / theta_i (1 = untouched, 1/s = PI)
    rotations_trained: float  # L0 * theta_i / 2pi: turns completed inside the trained length
    rotations_target: float  # T * theta'_i / 2pi: turns at the target length with the method
    regime: str  # "untouched" | "interpolates" | "extrapolates"

    def as_dict(self) -> dict:
        return asdict(self)


def _regime(scale: float, rot_trained: float, rot_target: float) -> str:
    if rot_target > rot_trained * (1 + _SAME) and rot_trained < 1.0:
        return "extrapolates"  # reaches angles the pair never took in training
    if abs(scale - 1.0) <= _SAME:
        return "untouched"
    return "interpolates"


def pair_views(rope: Rope, target_length: int, trained_length: int | None = None) -> list[PairView]:
    """Per-pair wavelength, scale and rotations for ``rope`` at ``target_length`` tokens.

    ``trained_length`` defaults to the method's L0 (``original_max_position_embeddings``).
    Dynamic methods are evaluated at ``seq_len = target_length``.
    """
    cfg = rope.config
    trained = trained_length or cfg.trained_length
    if trained is None:
        raise RopeConfigError(
            "inspect needs the trained length: pass --original-max-position-embeddings (L0)"
        )
    if target_length < 1:
        raise RopeConfigError(f"target length must be >= 1, got {target_length}")
    inv_freq, _ = rope.frequencies(target_length)
    if cfg.method == "proportional":
        original = base_inv_freq(cfg.base, cfg.head_dim)[: inv_freq.numel()]
    else:
        original = base_inv_freq(cfg.base, cfg.rotary_dim)
    rows = []
    for i, (theta, scaled) in enumerate(zip(original.tolist(), inv_freq.tolist(), strict=True)):
        scale = scaled / theta
        rot_trained = trained * theta / (2 * math.pi)
        rot_target = target_length * scaled / (2 * math.pi)
        rows.append(
            PairView(
                pair=i,
                wavelength=2 * math.pi / theta,
                scaled_wavelength=2 * math.pi / scaled if scaled > 0 else math.inf,
                scale=scale,
                rotations_trained=rot_trained,
                rotations_target=rot_target,
                regime=_regime(scale, rot_trained, rot_target) if scaled > 0 else "untouched",
            )
        )
    return rows


def summarize(rows: list[PairView]) -> dict[str, int]:
    """How many pairs are untouched, interpolate and extrapolate."""
    out = {"untouched": 0, "interpolates": 0, "extrapolates": 0}
    for row in rows:
        out[row.regime] += 1
    return out
