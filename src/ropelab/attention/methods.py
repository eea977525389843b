"""Attention-level position methods as pure functions on ``q``/``k``/``v`` tensors.

Every function takes ``q`` ``[b, h, s_q, hd]`` and ``k``/``v`` ``[b, h_kv, s_k, hd]`` (GQA: ``h`` a multiple
of ``h_kv``), *before* any rotation, integer positions ``q_positions``/``k_positions`` (``[s]`` or
``[b, s]``), and returns causal attention ``[b, h, s_q, hd]``: the query at position ``i`` sees the keys
at positions ``<= i``. The softmax scale is ``1/sqrt(hd)`` unless ``scale`` is given. With a KV cache, pass
the unrotated cached keys and all their positions; the new queries' positions in ``q_positions``.

The methods whose scores are not a plain ``q k^T`` (ALiBi, ReRoPE, Self-Extend) run through the
blockwise engine (:mod:`ropelab.attention.blockwise`): per block of ``block_size`` queries (default:
:func:`~ropelab.attention.blockwise.auto_block_size`), never a float ``[b, h, L, L]`` tensor. Pass
``block_size >= s_q`` for the materialised computation. ReRoPE, leaky ReRoPE and Self-Extend with
``block_size=None`` take the merged path instead where it applies (:mod:`ropelab.attention.merged`: two
fused causal attentions merged by their log-sum-exp, about the cost of native attention).

Nothing here depends on a model class, so the functions can back any model's attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from ropelab.attention.blockwise import BLOCK_ELEMENTS, blockwise_attention, visible_keys
from ropelab.attention.merged import merged_attention_supported, two_part_attention
from ropelab.attention.sdpa import as_2d, causal_mask, causal_sdpa, check_qkv, repeat_kv
from ropelab.attention.tables import query_scale, rope_tables, shared_seq_len
from ropelab.errors import RopeConfigError
from ropelab.rope.apply import rotate
from ropelab.rope.core import Rope

__all__ = [
    "alibi_attention",
    "alibi_bias",
    "alibi_slopes",
    "rerope_attention",
    "rope_attention",
    "self_extend_attention",
    "split_rotary_attention",
]


# ----------------------------------------------------------------------------------------- ALiBi
def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes, float32 ``[n_heads]`` (Press et al. 2021, arXiv 2108.12409).

    Power of two ``n``: ``m_h = 2^(-8h/n)``, h = 1..n. Otherwise, with ``p = 2^floor(log2 n)``: the ``p``
    slopes of ``p`` heads, then every second slope of ``2p`` heads (``2^(-8h/(2p))``, h = 1, 3, 5, ...),
    the first ``n - p`` of them. ``n = 12``: ``2^-1 .. 2^-8``, then ``2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5``.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise RopeConfigError(f"n_heads must be a positive integer, got {n_heads!r}")
    p = 1 << (n_heads.bit_length() - 1)  # largest power of two <= n_heads
    exponents = [-8.0 * h / p for h in range(1, p + 1)]
    exponents += [-8.0 * h / (2 * p) for h in range(1, 2 * (n_heads - p), 2)]
    return torch.tensor([2.0**e for e in exponents], dtype=torch.float64).float()


def alibi_bias(slopes: Tensor, q_positions: Tensor, k_positions: Tensor, *, causal: bool = True) -> Tensor:
    """The materialised ALiBi bias ``-m_h (i - j)``, float32 ``[b|1, h, s_q, s_k]`` (``-inf`` where the key
    is after the query when ``causal``). The ``O(h L^2)`` tensor that the blockwise path avoids."""
    distance = (as_2d(q_positions)[:, :, None] - as_2d(k_positions)[:, None, :]).float()  # [b|1, s_q, s_k]
    bias = distance[:, None] * (-slopes.to(device=distance.device, dtype=torch.float32))[:, None, None]
    if causal:
        bias.masked_fill_(~causal_mask(q_positions, k_positions)[:, None], float("-inf"))
    return bias


def alibi_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    slopes: Tensor | None = None,
    *,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Causal attention with ALiBi: ``score(i, j) = q_i . k_j * scale - m_h * (pos_i - pos_j)``.

    Press et al. 2021, arXiv 2108.12409. ``slopes``: ``[h]`` (default :func:`alibi_slopes` of ``h``).
    Blockwise: the bias exists only per block of queries, ``[b|1, h, B, n_k]``. Small float32/float64
    inputs whose whole bias fits in one automatic block (``block_size=None``) take SDPA with the bias as
    ``attn_mask`` instead (same memory, about twice as fast on CPU); half precision always runs
    blockwise, because a bf16/fp16 bias cannot hold large distances exactly.
    """
    check_qkv(q, k, v, q_positions, k_positions)
    h, hd = q.shape[1], q.shape[-1]
    slopes = alibi_slopes(h) if slopes is None else slopes
    if slopes.shape != (h,):
        raise RopeConfigError(
            f"ALiBi slopes must have shape [{h}] (one per query head), got {tuple(slopes.shape)}"
        )
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    qp, kp = as_2d(q_positions), as_2d(k_positions)
    k = repeat_kv(k, h)
    bias_elements = max(qp.shape[0], kp.shape[0]) * h * qp.shape[-1] * kp.shape[-1]
    if block_size is None and q.dtype in (torch.float32, torch.float64) and bias_elements <= BLOCK_ELEMENTS:
        visible = causal_mask(q_positions, k_positions)  # [b|1, s_q, s_k]
        if bool(visible.any(dim=-1).all()):  # (a row without keys is 0 in the engine, NaN in SDPA)
            bias = alibi_bias(slopes, q_positions, k_positions).to(q.dtype)
            return F.scaled_dot_product_attention(q, k, repeat_kv(v, h), attn_mask=bias, scale=scale)
    acc = torch.promote_types(q.dtype, torch.float32)  # scores and softmax: float32 (float64 stays)
    neg_slopes = -slopes.to(device=q.device, dtype=acc)[:, None, None]  # [h, 1, 1]

    def scores(qs: slice, n_k: int) -> Tensor:
        s = (q[:, :, qs] @ k[:, :, :n_k].transpose(-1, -2)).to(acc).mul_(scale)  # [b, h, B, n_k]
        distance = (qp[:, qs, None] - kp[:, None, :n_k]).to(acc)  # [b|1, B, n_k]
        return s.addcmul_(distance[:, None], neg_slopes)  # in place: no second [b, h, B, n_k] tensor

    return blockwise_attention(scores, v, q_positions, k_positions, n_heads=h, block_size=block_size)


# ------------------------------------------------------------------------------------------ RoPE
def _rotated(x: Tensor, rope: Rope, positions: Tensor, seq_len: int, layout: str) -> Tensor:
    cos, sin = rope_tables(rope, positions, seq_len=seq_len)
    return rotate(x, cos, sin, layout=layout)


def rope_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    rope: Rope,
    *,
    layout: str = "half",
    log_n: bool | None = None,
    scale: float | None = None,
) -> Tensor:
    """Plain RoPE attention (Su et al. 2021, arXiv 2104.09864) with any method of the registry.

    Rotates ``q`` and ``k`` with ``rope``'s tables (one sequence length ``max(position) + 1`` for both, so
    dynamic methods stay consistent with a KV cache), optionally applies log-n scaling to ``q``
    (``log_n=None`` follows ``rope.config.log_n``; Su, kexue.fm 9706), then causal SDPA.
    """
    check_qkv(q, k, v, q_positions, k_positions)
    seq_len = shared_seq_len(q_positions, k_positions)
    factors = query_scale(rope, q_positions, log_n)
    if factors is not None:
        q = q * factors.to(q.dtype)
    q = _rotated(q, rope, q_positions, seq_len, layout)
    k = _rotated(k, rope, k_positions, seq_len, layout)
    return causal_sdpa(q, k, v, q_positions, k_positions, scale=scale)


def split_rotary_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    rope: Rope,
    *,
    window: int,
    far_q_positions: Tensor,
    far_k_positions: Tensor,
    layout: str = "half",
    log_n: bool | None = None,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """RoPE attention with two position systems merged before the softmax (ReRoPE, Self-Extend).

    ``score(i, j)`` uses ``q`` rotated at ``q_positions[i]`` and ``k`` at ``k_positions[j]`` when
    ``pos_i - pos_j < window`` (the neighbourhood), else ``q`` rotated at ``far_q_positions[i]`` and ``k``
    at ``far_k_positions[j]`` (integer or fractional, same shapes as the positions). Blockwise; the far
    scores are computed only for the keys some query of the block sees at distance ``>= window``.
    """
    check_qkv(q, k, v, q_positions, k_positions)
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise RopeConfigError(f"window must be a positive integer, got {window!r}")
    h, hd = q.shape[1], q.shape[-1]
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    seq_len = shared_seq_len(q_positions, k_positions)
    factors = query_scale(rope, q_positions, log_n)
    if factors is not None:
        q = q * factors.to(q.dtype)
    q_near = _rotated(q, rope, q_positions, seq_len, layout)
    k_near = _rotated(k, rope, k_positions, seq_len, layout)
    q_far = _rotated(q, rope, far_q_positions, seq_len, layout)
    if block_size is None and merged_attention_supported(q, k, v, q_positions, k_positions):
        k_far = _rotated(k, rope, far_k_positions, seq_len, layout)
        return two_part_attention(q_near, k_near, q_far, k_far, v, window=int(window), scale=scale)
    k_far = repeat_kv(_rotated(k, rope, far_k_positions, seq_len, layout), h)
    k_near = repeat_kv(k_near, h)
    qp, kp = as_2d(q_positions), as_2d(k_positions).contiguous()
    keys_sorted = kp.shape[-1] < 2 or bool((kp[:, 1:] >= kp[:, :-1]).all())
    acc = torch.promote_types(q.dtype, torch.float32)  # scores and softmax: float32 (float64 stays)

    def scores(qs: slice, n_k: int) -> Tensor:
        s = (q_near[:, :, qs] @ k_near[:, :, :n_k].transpose(-1, -2)).to(acc)  # [b, h, B, n_k]
        qp_block = qp[:, qs]
        # keys at distance >= window from some query of the block are a prefix when keys are sorted
        n_far = min(n_k, visible_keys(kp, qp_block - window)) if keys_sorted else n_k
        if n_far > 0:
            far = (q_far[:, :, qs] @ k_far[:, :, :n_far].transpose(-1, -2)).to(acc)  # [b, h, B, n_far]
            near = kp[:, None, :n_far] > qp_block[:, :, None] - window  # i - j < window, [b|1, B, n_far]
            s[..., :n_far] = torch.where(near[:, None], s[..., :n_far], far)
        return s.mul_(scale)

    return blockwise_attention(scores, v, q_positions, k_positions, n_heads=h, block_size=block_size)


def rerope_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    rope: Rope,
    *,
    window: int,
    leak: float | None = None,
    layout: str = "half",
    log_n: bool | None = None,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """ReRoPE / leaky ReRoPE (Su, kexue.fm 9708; bojone/rerope): relative positions capped beyond ``window``.

    Relative position in the score: ``i - j`` inside the window ``w``; beyond it ``w`` (ReRoPE) or
    ``w + (i - j - w) / leak`` (leaky ReRoPE, ``leak`` = k > 1). Two score matrices per query block:
    normal RoPE, and ``q`` rotated at ``w`` against unrotated ``k`` (leaky: ``q`` at
    ``i/k + w(1 - 1/k)``, ``k`` at ``j/k``), merged with ``where(i - j < w)`` before the softmax.
    """
    if leak is not None and (isinstance(leak, bool) or not math.isfinite(leak) or leak < 1):
        raise RopeConfigError(
            f"leak (leaky ReRoPE's k) must be a number >= 1, got {leak!r}; omit it for ReRoPE"
        )
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise RopeConfigError(f"window must be a positive integer, got {window!r}")
    if leak is None:
        far_q = torch.full_like(q_positions, int(window))
        far_k = torch.zeros_like(k_positions)
    else:
        far_q = q_positions.to(torch.float64) / leak + window * (1.0 - 1.0 / leak)
        far_k = k_positions.to(torch.float64) / leak
    return split_rotary_attention(
        q,
        k,
        v,
        q_positions,
        k_positions,
        rope,
        window=int(window),
        far_q_positions=far_q,
        far_k_positions=far_k,
        layout=layout,
        log_n=log_n,
        scale=scale,
        block_size=block_size,
    )


def self_extend_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    rope: Rope,
    *,
    group: int,
    window: int,
    layout: str = "half",
    log_n: bool | None = None,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Self-Extend (Jin et al. 2024, arXiv 2401.01325; datamllab/LongLM): grouped attention beyond a window.

    Neighbour attention (``i - j < W``) uses the true positions; grouped attention beyond uses ``q`` at
    ``floor(i/G) + W - floor(W/G)`` and ``k`` at ``floor(j/G)``; the two score matrices are merged before
    the softmax. Relative position beyond the window: ``floor(i/G) - floor(j/G) + W - floor(W/G)``.
    """
    for key, value in (("group", group), ("window", window)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise RopeConfigError(f"Self-Extend {key} must be a positive integer, got {value!r}")
    group, window = int(group), int(window)
    far_q = torch.div(q_positions, group, rounding_mode="floor") + (window - window // group)
    far_k = torch.div(k_positions, group, rounding_mode="floor")
    return split_rotary_attention(
        q,
        k,
        v,
        q_positions,
        k_positions,
        rope,
        window=window,
        far_q_positions=far_q,
        far_k_positions=far_k,
        layout=layout,
        log_n=log_n,
        scale=scale,
        block_size=block_size,
    )
