"""RoPE tables for the attention-level methods: fractional positions, one length, log-n factors.

ReRoPE's leaky variant rotates queries and keys at fractional positions (``i/k + w(1 - 1/k)``, ``j/k``),
which :meth:`ropelab.Rope.cos_sin` refuses; :func:`rope_tables` computes the same half tables for any
real position, with the same arithmetic (float64 angles from the float32 frequencies, attention
scaling multiplied into cos and sin), so integer positions give bit-identical tables either way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ropelab.errors import RopeConfigError
from ropelab.rope.core import Rope

__all__ = ["log_n_scale", "query_scale", "rope_tables", "shared_seq_len"]


def shared_seq_len(q_positions: Tensor, k_positions: Tensor) -> int:
    """The sequence length the dynamic methods see: ``max(position) + 1`` over queries and keys.

    Queries and keys of one call must use the same frequencies (keys are rotated from scratch on every
    call, which is what makes dynamic NTK correct with a KV cache).
    """
    top = max(
        int(q_positions.max()) if q_positions.numel() else 0,
        int(k_positions.max()) if k_positions.numel() else 0,
    )
    return top + 1


def rope_tables(
    rope: Rope, positions: Tensor, *, seq_len: int, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Half ``cos``/``sin`` ``[..., d/2]`` at integer or fractional ``positions`` ``[s]``/``[b, s]`` (>= 0).

    Attention scaling (YaRN mscale, LongRoPE factor) is folded in, as in :meth:`Rope.cos_sin`.
    """
    if not positions.is_floating_point():
        return rope.cos_sin(positions, seq_len=seq_len, dtype=dtype)
    if positions.numel() and float(positions.min()) < 0:
        raise RopeConfigError(f"rotary positions must be >= 0, got min {float(positions.min())}")
    if rope.config.unscaled_positions:
        raise RopeConfigError(
            "unscaled_positions (LongRoPE's n_hat) needs integer positions, not fractional ones"
        )
    inv_freq, scaling = rope.frequencies(seq_len)
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device, torch.float64)
    cos = (angles.cos() * scaling).float()
    sin = (angles.sin() * scaling).float()
    return cos.to(dtype), sin.to(dtype)


def log_n_scale(positions: Tensor, trained_length: int) -> Tensor:
    """log-n factor ``max(1, log(n + 1) / log(L0))`` per 0-based position ``n`` (float32, same shape).

    Su, kexue.fm 9706: multiplying the query at position ``n`` keeps the attention entropy of training
    (``L0`` = ``trained_length``) at longer lengths. Positions ``< L0`` get exactly 1.
    """
    if trained_length < 2:
        raise RopeConfigError(f"log-n scaling needs a trained length >= 2, got {trained_length}")
    n = positions.to(torch.float64) + 1
    return torch.clamp(torch.log(n) / math.log(trained_length), min=1.0).float()


def query_scale(rope: Rope, q_positions: Tensor, log_n: bool | None) -> Tensor | None:
    """The log-n factors as ``[b|1, 1, s_q, 1]`` for ``q``, or ``None`` when log-n is off.

    ``log_n=None`` follows ``rope.config.log_n``; ``True`` needs the Rope's trained length.
    """
    use = rope.config.log_n if log_n is None else log_n
    if not use:
        return None
    trained = rope.config.trained_length
    if trained is None:
        raise RopeConfigError(
            "log_n scaling needs the trained length; build the Rope with original_max_position_embeddings=L0"
        )
    factors = log_n_scale(q_positions, trained)
    return (factors[None] if factors.dim() == 1 else factors)[:, None, :, None]
