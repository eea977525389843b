"""Slow, direct references (explicit relative-position matrices) and the materialised ALiBi baseline.

The references do not rotate anything: they write each method's relative position ``rel(i, j)`` into an
explicit ``[b|1, s_q, s_k]`` matrix and evaluate the RoPE score from its closed form. For a rotary pair
``(q1, q2)``, ``(k1, k2)`` with frequency ``theta`` and attention scaling ``c`` (Su et al. 2021):

    <R(i theta) q, R(j theta) k> = c^2 [cos(rel theta) (q1 k1 + q2 k2) + sin(rel theta) (q1 k2 - q2 k1)]

with ``rel = i - j``; any relative-position function (ReRoPE's cap, Self-Extend's groups) goes in its
place. Everything is float64 and ``O(b h L^2 d)`` memory: small inputs only (tests, checks).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from ropelab.attention.methods import alibi_bias
from ropelab.attention.sdpa import as_2d, causal_mask, repeat_kv
from ropelab.rope.core import Rope

__all__ = [
    "alibi_attention_materialised",
    "alibi_bias",
    "reference_attention",
    "relative_positions",
    "rerope_relative",
    "rope_reference",
    "rotary_pair_indices",
    "rotary_scores",
    "self_extend_relative",
]


def relative_positions(q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """``i - j`` as float64 ``[b|1, s_q, s_k]``."""
    return (as_2d(q_positions)[:, :, None] - as_2d(k_positions)[:, None, :]).to(torch.float64)


def rerope_relative(
    q_positions: Tensor, k_positions: Tensor, window: int, leak: float | None = None
) -> Tensor:
    """ReRoPE: ``min(i - j, w)``; leaky: ``i - j`` inside ``w``, ``w + (i - j - w)/k`` beyond (float64)."""
    rel = relative_positions(q_positions, k_positions)
    far = torch.full_like(rel, float(window)) if leak is None else window + (rel - window) / leak
    return torch.where(rel < window, rel, far)


def self_extend_relative(q_positions: Tensor, k_positions: Tensor, group: int, window: int) -> Tensor:
    """Self-Extend: ``i - j`` if ``< W``, else ``floor(i/G) - floor(j/G) + W - floor(W/G)`` (float64)."""
    rel = relative_positions(q_positions, k_positions)
    qg = torch.div(as_2d(q_positions), group, rounding_mode="floor")[:, :, None]
    kg = torch.div(as_2d(k_positions), group, rounding_mode="floor")[:, None, :]
    grouped = (qg - kg + window - window // group).to(torch.float64)
    return torch.where(rel < window, rel, grouped)


def rotary_pair_indices(rotary_dim: int, layout: str) -> tuple[Tensor, Tensor]:
    """Channel indices ``(first, second)`` of the rotary pairs for ``layout`` ("half" or "interleaved")."""
    if layout == "half":
        return torch.arange(rotary_dim // 2), torch.arange(rotary_dim // 2, rotary_dim)
    return torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2)


def rotary_scores(
    q: Tensor,
    k: Tensor,
    rel: Tensor,
    inv_freq: Tensor,
    *,
    scaling: float = 1.0,
    layout: str = "half",
    pair_weights: Tensor | None = None,
) -> Tensor:
    """Unscaled RoPE scores ``[b, h, s_q, s_k]`` (float64) from the closed form at relative positions ``rel``.

    ``q`` ``[b, h, s_q, hd]``, ``k`` ``[b, h_kv, s_k, hd]`` (unrotated), ``rel`` ``[b|1, s_q, s_k]``,
    ``inv_freq`` ``[r/2]``; channels ``r..hd`` contribute their plain dot product. ``pair_weights``
    ``[b|1, h|1, s_q, s_k, r/2]`` multiplies each pair's term (xPos decay); default 1.
    """
    q, k = q.to(torch.float64), repeat_kv(k, q.shape[1]).to(torch.float64)
    r = 2 * inv_freq.numel()
    i1, i2 = rotary_pair_indices(r, layout)
    q1, q2, k1, k2 = q[..., i1], q[..., i2], k[..., i1], k[..., i2]
    same = torch.einsum("bhip,bhjp->bhijp", q1, k1) + torch.einsum("bhip,bhjp->bhijp", q2, k2)
    cross = torch.einsum("bhip,bhjp->bhijp", q1, k2) - torch.einsum("bhip,bhjp->bhijp", q2, k1)
    angles = rel[:, None, :, :, None] * inv_freq.to(torch.float64)  # [b|1, 1, s_q, s_k, r/2]
    terms = same * angles.cos() + cross * angles.sin()
    if pair_weights is not None:
        terms = terms * pair_weights
    scores = terms.sum(-1) * scaling**2
    if r < q.shape[-1]:
        scores = scores + q[..., r:] @ k[..., r:].transpose(-1, -2)
    return scores


def reference_attention(scores: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """Causal softmax of ``scores`` ``[b, h, s_q, s_k]`` times ``v`` ``[b, h_kv, s_k, hd]``, in float64."""
    mask = causal_mask(q_positions, k_positions)[:, None]
    probs = torch.softmax(scores.to(torch.float64).masked_fill(~mask, float("-inf")), dim=-1)
    return probs @ repeat_kv(v, scores.shape[1]).to(torch.float64)


def alibi_attention_materialised(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    slopes: Tensor,
    *,
    scale: float | None = None,
) -> Tensor:
    """ALiBi the usual way: the full bias :func:`alibi_bias` as SDPA's float ``attn_mask``."""
    h = q.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = alibi_bias(slopes, q_positions, k_positions).to(q.dtype)
    return F.scaled_dot_product_attention(q, repeat_kv(k, h), repeat_kv(v, h), attn_mask=bias, scale=scale)


def rope_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    rope: Rope,
    rel: Tensor,
    *,
    layout: str = "half",
    q_factors: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Direct reference for any RoPE method with relative positions ``rel``: float64 ``[b, h, s_q, hd]``.

    ``q_factors`` ``[b|1, 1, s_q, 1]`` multiplies ``q`` first (log-n). Frequencies at the shared length.
    """
    seq_len = int(max(q_positions.max(), k_positions.max())) + 1
    inv_freq, scaling = rope.frequencies(seq_len)
    q = q.to(torch.float64) if q_factors is None else q.to(torch.float64) * q_factors.to(torch.float64)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = rotary_scores(q, k, rel, inv_freq, scaling=scaling, layout=layout) * scale
    return reference_attention(scores, v, q_positions, k_positions)
