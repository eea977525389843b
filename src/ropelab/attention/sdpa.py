"""Causal attention by position, the shared building block of every encoding and method.

Shapes: ``q`` ``[b, h, s_q, hd]``, ``k``/``v`` ``[b, h_kv, s_k, hd]`` (grouped-query attention: ``h`` a
multiple of ``h_kv``); positions int64 ``[s]`` (shared by the batch) or ``[b, s]``. Causality is by
position: the query at position ``i`` sees the keys whose position is ``<= i``. With a KV cache,
``k_positions`` covers the cached keys and ``q_positions`` only the new queries.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ropelab.errors import RopeConfigError

__all__ = ["as_2d", "causal_mask", "causal_sdpa", "check_qkv", "repeat_kv"]


def repeat_kv(k: Tensor, n_heads: int) -> Tensor:
    """``[b, h_kv, s, hd]`` -> ``[b, n_heads, s, hd]`` for grouped-query attention (a view when possible)."""
    h_kv = k.shape[1]
    if h_kv == n_heads:
        return k
    b, _, s, hd = k.shape
    return k[:, :, None].expand(b, h_kv, n_heads // h_kv, s, hd).reshape(b, n_heads, s, hd)


def as_2d(positions: Tensor) -> Tensor:
    """Positions ``[s]`` -> ``[1, s]``; ``[b, s]`` unchanged."""
    return positions[None] if positions.dim() == 1 else positions


def causal_mask(q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """Boolean ``[b|1, s_q, s_k]``: True where the key position is ``<=`` the query position."""
    return as_2d(k_positions)[:, None, :] <= as_2d(q_positions)[:, :, None]


def check_qkv(q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor) -> None:
    """Raise :class:`RopeConfigError` on inconsistent shapes (one line naming the tensor and the fix)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise RopeConfigError(
            f"q, k, v must be 4-d [b, h, s, hd]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[:3] != v.shape[:3]:
        raise RopeConfigError(f"k {tuple(k.shape)} and v {tuple(v.shape)} differ in [b, h_kv, s_k]")
    if q.shape[1] % k.shape[1]:
        raise RopeConfigError(
            f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})"
        )
    for name, pos, s in (("q_positions", q_positions, q.shape[2]), ("k_positions", k_positions, k.shape[2])):
        if pos.dim() not in (1, 2) or pos.shape[-1] != s:
            raise RopeConfigError(f"{name} must be [{s}] or [b, {s}], got shape {tuple(pos.shape)}")
        if pos.is_floating_point():
            raise RopeConfigError(f"{name} must be integers (int64), got {pos.dtype}")
        if pos.dim() == 2 and pos.shape[0] not in (1, q.shape[0]):
            raise RopeConfigError(f"{name} has batch {pos.shape[0]} but q has batch {q.shape[0]}")


def causal_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    *,
    scale: float | None = None,
) -> Tensor:
    """Causal scaled-dot-product attention by position -> ``[b, h, s_q, hd]``.

    Fast path (``is_causal``) when queries and keys share the same increasing 1-d positions; otherwise an
    explicit boolean mask ``[b|1, 1, s_q, s_k]``. ``scale`` defaults to ``1/sqrt(hd)``.
    """
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    s_q, s_k = q.shape[2], k.shape[2]
    if (
        q_positions.dim() == 1
        and s_q == s_k
        and torch.equal(q_positions, k_positions)
        and bool((q_positions[1:] > q_positions[:-1]).all())
    ):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    mask = causal_mask(q_positions, k_positions)[:, None]  # [b|1, 1, s_q, s_k]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
