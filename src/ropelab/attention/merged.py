"""Two-position-system attention (ReRoPE, leaky ReRoPE, Self-Extend) at the cost of native attention.

Each of these methods scores the key ``j`` of the query ``i`` with one of two rotations: the normal one
when ``i - j < w`` (the neighbour band), a changed one beyond (the far part). The two key sets are
disjoint, so the attention is exactly the merge of two ordinary softmax attentions by their
log-sum-exp (the identity behind FlashAttention's blocked softmax, Dao et al. 2022, arXiv 2205.14135):

    out = (exp(lse_a - m) out_a + exp(lse_b - m) out_b) / (exp(lse_a - m) + exp(lse_b - m))

with ``(out_a, lse_a)`` the attention over the band with normal positions and ``(out_b, lse_b)`` the
attention over the far keys with the changed positions (``m = logaddexp(lse_a, lse_b)``).

When the key positions are one contiguous range and the queries are its last ``s_q`` positions (a
prefill, a KV-cache step, a chunk after a cache: every call a transformers model makes), both parts are
ordinary *structured* attentions of index only:

* far part: the query ``t`` (key index ``e_t = s_k - s_q + t``) sees the keys ``j <= e_t - w``: a causal
  attention shifted by ``w``, which splits into a block that every query sees whole (no mask) and a
  square causal block (``is_causal``); queries with no far key are left out;
* band part: the keys ``(e_t - w, e_t]``: query blocks of ``B = min(s_q, w)`` rows against their own
  ``B + w - 1`` keys (an unfolded copy of ``k``/``v`` about twice their size), one additive mask
  ``[B, B + w - 1]`` shared by all blocks, and a separate masked call for the first blocks, whose
  windows reach before the first key.

Kernel choice (measured on the 2-core CPU of this project, torch 2.13): the parts run in PyTorch's fused
CPU flash kernel ``aten._scaled_dot_product_flash_attention_for_cpu``, which returns the output *and*
the log-sum-exp (float32, ``[b, h, s_q]``) for float32, bfloat16, float16 and float64 inputs, takes an
additive mask of the query dtype and never materialises scores. The far part is a single causal call
(the same cost as native attention on ``L - w`` tokens), the band ``O(L w)``; the merge is ``O(L hd)``.
``flex_attention`` would express the same masks but needs ``torch.compile`` to be fast (a compile per
shape; its cost on this machine was not measured), and its eager mode materialises the scores. Peak
memory: the kernel's own tiles, the rotated copies of ``q``/``k`` for both position systems, the unfolded
band keys (about ``2 b h L hd``) and the float32 accumulator ``[b, h, s_q, hd]``;
never a ``[h, L, L]`` tensor.

Fallback: :func:`merged_attention_supported` says when this path applies; otherwise (another device,
arbitrary positions, autograd: the kernel's log-sum-exp output carries no gradient, so the merge weights
would be treated as constants) the callers use the blockwise engine (:mod:`ropelab.attention.blockwise`),
which computes the same function per block of queries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ropelab.attention.sdpa import as_2d, repeat_kv

__all__ = ["merged_attention_supported", "two_part_attention"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _flash(q: Tensor, k: Tensor, v: Tensor, scale: float, *, causal: bool = False, mask=None):
    """Fused CPU attention -> ``(out [b, h, n_q, hd], lse [b, h, n_q] float32|float64)``."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=mask, scale=scale
    )
    return out, lse


def is_contiguous_tail(q_positions: Tensor, k_positions: Tensor) -> bool:
    """True when every row's keys are ``c, c+1, ..., c+s_k-1`` and its queries the last ``s_q`` of them."""
    qp, kp = as_2d(q_positions), as_2d(k_positions)
    s_q, s_k = qp.shape[-1], kp.shape[-1]
    if s_q == 0 or s_q > s_k:
        return False
    ramp = kp[:, :1] + torch.arange(s_k, device=kp.device)
    return bool(torch.equal(kp, ramp)) and bool((qp == kp[:, s_k - s_q :]).all())


def merged_attention_supported(
    q: Tensor, k: Tensor, v: Tensor, q_positions: Tensor, k_positions: Tensor
) -> bool:
    """Whether :func:`two_part_attention` applies: CPU tensors of a supported dtype, no autograd graph
    needed, contiguous positions with the queries at the end (see the module docstring)."""
    tensors = (q, k, v)
    if any(t.device.type != "cpu" or t.dtype not in _DTYPES for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return is_contiguous_tail(q_positions, k_positions)


def _shifted_causal(q: Tensor, k: Tensor, v: Tensor, shift: int, scale: float) -> list[tuple[Tensor, Tensor]]:
    """Query ``t`` sees keys ``[0, t + shift]`` (``k``/``v`` hold ``n_q + shift`` keys): an unmasked
    part over the first ``shift`` keys and a square causal part -> list of ``(out, lse)`` over all rows."""
    n_q = q.shape[2]
    parts = []
    if shift > 0:
        parts.append(_flash(q, k[:, :, :shift], v[:, :, :shift], scale))
    parts.append(_flash(q, k[:, :, shift : shift + n_q], v[:, :, shift : shift + n_q], scale, causal=True))
    return parts


def _band(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> tuple[Tensor, Tensor]:
    """Query ``t`` sees keys ``(e_t - w, e_t]``, ``e_t = s_k - s_q + t`` -> ``(out, lse)`` over all rows."""
    b, h, s_q, hd = q.shape
    s_k = k.shape[2]
    block = max(1, min(s_q, window))
    n_blocks = -(-s_q // block)
    span = block + window - 1  # keys of one block: [start0 + n*block, start0 + n*block + span)
    start0 = s_k - s_q - window + 1
    front = max(0, -start0)
    back = start0 + n_blocks * block + window - 1 - s_k
    pad_q = n_blocks * block - s_q

    def windows(x: Tensor) -> Tensor:  # [b, h, s_k, d] -> [b * n_blocks, h, span, d]
        x = x[:, :, max(0, start0) :]
        x = torch.nn.functional.pad(x, (0, 0, front, back))
        x = x.unfold(2, span, block).transpose(-1, -2)  # [b, h, n_blocks, span, d]
        return x.permute(0, 2, 1, 3, 4).reshape(b * n_blocks, h, span, x.shape[-1])

    qb = torch.nn.functional.pad(q, (0, 0, 0, pad_q)).reshape(b, h, n_blocks, block, hd)
    qb = qb.permute(0, 2, 1, 3, 4).reshape(b * n_blocks, h, block, hd)
    kb, vb = windows(k), windows(v)
    a = torch.arange(block)[:, None]
    c = torch.arange(span)[None, :]
    visible = (c >= a) & (c <= a + window - 1)  # [block, span]
    neg = torch.full((), float("-inf"), dtype=q.dtype)
    shared = torch.where(visible, torch.zeros((), dtype=q.dtype), neg)[None, None]  # [1, 1, block, span]
    # blocks whose window starts before key 0 see padding there: their own masks
    n_front = min(n_blocks, -(-front // block)) if front else 0
    outs, lses = [], []
    if n_front:
        key_index = start0 + torch.arange(n_front)[:, None] * block + c  # [n_front, span]
        front_mask = torch.where(visible[None] & (key_index >= 0)[:, None, :], 0.0, float("-inf"))
        front_mask = front_mask.to(q.dtype)[None].expand(b, -1, -1, -1).reshape(b * n_front, 1, block, span)
        rows = [slice(i * n_blocks, i * n_blocks + n_front) for i in range(b)]
        pick = torch.cat([torch.arange(r.start, r.stop) for r in rows])
        o, s = _flash(qb[pick], kb[pick], vb[pick], scale, mask=front_mask)
        outs.append(o.reshape(b, n_front, h, block, hd))
        lses.append(s.reshape(b, n_front, h, block))
    if n_front < n_blocks:
        rest = torch.cat([torch.arange(i * n_blocks + n_front, (i + 1) * n_blocks) for i in range(b)])
        o, s = _flash(qb[rest], kb[rest], vb[rest], scale, mask=shared)
        outs.append(o.reshape(b, n_blocks - n_front, h, block, hd))
        lses.append(s.reshape(b, n_blocks - n_front, h, block))
    out = torch.cat(outs, dim=1).permute(0, 2, 1, 3, 4).reshape(b, h, n_blocks * block, hd)[:, :, :s_q]
    lse = torch.cat(lses, dim=1).permute(0, 2, 1, 3).reshape(b, h, n_blocks * block)[:, :, :s_q]
    return out, lse


def _band_blocks(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> tuple[Tensor, Tensor]:
    """:func:`_band` for ``s_q >= w`` in query blocks of exactly ``w`` rows, without masks.

    The query ``a`` of a block sees the block's own keys ``c <= a`` (``is_causal``) and the previous ``w``
    keys ``c > a``; reversing the rows of both turns the latter into ``c' <= a' - 1``, again a causal
    square (rows ``1..w-1`` against keys ``0..w-2``). Only a first block whose previous keys start before
    key 0 needs an explicit mask. Every score computed is one the band needs (tiles above the diagonal are
    skipped by the kernel).
    """
    b, h, s_q, _ = q.shape
    s_k = k.shape[2]
    w = window
    n_blocks = -(-s_q // w)
    pad = n_blocks * w - s_q
    base = s_k - s_q  # key index of query 0

    def blocks(x: Tensor, start: int) -> Tensor:  # keys [start, start + n_blocks*w) -> [b*n, h, w, d]
        x = x[:, :, max(0, start) : start + n_blocks * w]
        x = torch.nn.functional.pad(x, (0, 0, max(0, -start), n_blocks * w - x.shape[2] - max(0, -start)))
        x = x.reshape(b, h, n_blocks, w, x.shape[-1]).transpose(1, 2)
        return x.reshape(b * n_blocks, h, w, x.shape[-1])

    qb = blocks(torch.nn.functional.pad(q, (0, 0, 0, pad)), 0)
    out, lse = _flash(qb, blocks(k, base), blocks(v, base), scale, causal=True)  # own block, all rows
    acc = out.to(torch.promote_types(v.dtype, torch.float32))
    total = lse.to(acc.dtype).clone()
    # previous block: block n's keys [base + (n-1) w, base + n w); block 0's start before key 0 if base < w
    first = 0 if base >= w else 1
    if first < n_blocks and w > 1:
        kp, vp = blocks(k, base - w), blocks(v, base - w)
        sel = torch.cat([torch.arange(i * n_blocks + first, (i + 1) * n_blocks) for i in range(b)])
        qr, kr, vr = qb[sel].flip(2), kp[sel].flip(2), vp[sel].flip(2)
        o, s = _flash(qr[:, :, 1:], kr[:, :, : w - 1], vr[:, :, : w - 1], scale, causal=True)
        # reversed rows 1..w-1 are the block's rows w-2..0
        merged = _merged(acc[sel, :, : w - 1], total[sel, :, : w - 1], o.flip(2), s.flip(2))
        acc[sel, :, : w - 1], total[sel, :, : w - 1] = merged
    if first == 1 and base > 0:  # block 0: previous keys [0, base), seen by the rows a < base
        c = torch.arange(w)[None, :]
        a = torch.arange(w)[:, None]
        visible = (c > a) & (c >= w - base)  # keys of the previous block at index >= 0
        mask = torch.where(visible, 0.0, float("-inf")).to(q.dtype)[None, None]
        sel0 = torch.arange(b) * n_blocks
        rows = w - 1  # every row a < w - 1 sees key c = w - 1 (index base - 1)
        o, s = _flash(
            qb[sel0, :, :rows],
            blocks(k, base - w)[sel0],
            blocks(v, base - w)[sel0],
            scale,
            mask=mask[:, :, :rows].contiguous(),
        )
        merged = _merged(acc[sel0, :, :rows], total[sel0, :, :rows], o, s)
        acc[sel0, :, :rows], total[sel0, :, :rows] = merged
    out = acc.reshape(b, n_blocks, h, w, -1).transpose(1, 2).reshape(b, h, n_blocks * w, -1)[:, :, :s_q]
    lse = total.reshape(b, n_blocks, h, w).transpose(1, 2).reshape(b, h, n_blocks * w)[:, :, :s_q]
    return out, lse


def _merged(acc: Tensor, total: Tensor, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Fold one part ``(out, lse)`` into the running normalised output ``acc`` and its log-sum-exp
    ``total`` (finite on every row: the band part comes first) -> the new ``(acc, total)``."""
    lse = lse.to(total.dtype)
    new = torch.logaddexp(total, lse)
    return acc * (total - new).exp()[..., None] + out.to(acc.dtype) * (lse - new).exp()[..., None], new


def two_part_attention(
    q_near: Tensor,
    k_near: Tensor,
    q_far: Tensor,
    k_far: Tensor,
    v: Tensor,
    *,
    window: int,
    scale: float,
) -> Tensor:
    """Band attention with ``(q_near, k_near)`` merged with far attention with ``(q_far, k_far)`` exactly.

    ``q_*`` ``[b, h, s_q, hd]`` and ``k_*`` ``[b, h_kv, s_k, hd]`` already rotated (and ``q`` log-n
    scaled), ``v`` ``[b, h_kv, s_k, hd_v]``; the query ``t`` sits at key index ``s_k - s_q + t`` (see
    :func:`merged_attention_supported`). Returns ``[b, h, s_q, hd_v]`` in ``v.dtype``.
    """
    h, s_q = q_near.shape[1], q_near.shape[2]
    s_k = k_near.shape[2]
    k_near, k_far, v = repeat_kv(k_near, h), repeat_kv(k_far, h), repeat_kv(v, h)
    acc_dtype = torch.promote_types(v.dtype, torch.float32)
    if window >= s_k:  # no far key for anyone: plain causal attention
        parts = _shifted_causal(q_near, k_near, v, s_k - s_q, scale)
        rows = [(0, p) for p in parts]
    else:
        band = _band_blocks if s_q >= window else _band
        rows = [(0, band(q_near, k_near, v, window, scale))]
        offset = s_k - s_q - window  # query t sees far keys j <= t + offset
        t0 = max(0, -offset)
        if t0 < s_q:
            n_far = s_k - window
            parts = _shifted_causal(
                q_far[:, :, t0:], k_far[:, :, :n_far], v[:, :, :n_far], t0 + offset, scale
            )
            rows += [(t0, p) for p in parts]
    first_out, first_lse = rows[0][1]
    acc = first_out.to(acc_dtype)
    total = first_lse.to(acc_dtype).clone()
    for t0, (out, lse) in rows[1:]:
        acc[:, :, t0:], total[:, :, t0:] = _merged(acc[:, :, t0:], total[:, :, t0:], out, lse)
    return acc.to(v.dtype)
