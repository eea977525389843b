"""Triton kernel for the fused RoPE rotation of q or k on a GPU (or on the CPU under ``TRITON_INTERPRET=1``).

Same contract and arithmetic as the C++ kernel (``rope_cpu.cpp``): ``x``/``out`` ``[b, h, s, d]`` with any
strides and a contiguous last dim; ``cos``/``sin`` ``[B, s, r/2]`` contiguous, ``B`` 1 or ``b``; position
offsets (KV cache) by slicing the tables before the call (a view: no copy). Each program rotates a block of
``BLOCK_ROWS`` rows (one row = one head at one position); ``out=None`` rotates in place (every program reads
its two channel halves before writing them). ``exact``: products rounded to x's dtype as in the torch path;
the launch disables FMA contraction (``enable_fp_fusion=False``), which would change the last bit of
``a*c - b*s`` in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["rotate_triton"]


@triton.jit
def _round(v, ROUND_BF16: tl.constexpr, dt):
    """float32 ``v`` rounded to ``dt`` (to nearest even), back in float32. bf16 by integer arithmetic:
    the interpreter's float32 -> bf16 cast truncates, the GPU's rounds; this rounds on both."""
    if ROUND_BF16:
        u = v.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return tl.where(v != v, v, u.to(tl.float32, bitcast=True))
    return v.to(dt).to(tl.float32)


@triton.jit
def _rope_kernel(
    x_ptr,
    out_ptr,
    cos_ptr,
    sin_ptr,
    n_rows,
    heads,
    seq,
    n2,
    width,
    sxb,
    sxh,
    sxs,
    sob,
    soh,
    sos,
    stb,
    sts,
    INTERLEAVED: tl.constexpr,
    EXACT: tl.constexpr,
    ROUND_BF16: tl.constexpr,
    COPY_TAIL: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,
    BLOCK_TAIL: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # flat (b, h, p) index
    row_ok = rows < n_rows
    p = (rows % seq).to(tl.int64)
    h = ((rows // seq) % heads).to(tl.int64)
    b = (rows // (seq * heads)).to(tl.int64)
    x_row = b * sxb + h * sxh + p * sxs
    o_row = b * sob + h * soh + p * sos
    t_row = b * stb + p * sts

    j = tl.arange(0, BLOCK_PAIRS)
    mask = row_ok[:, None] & (j < n2)[None, :]
    if INTERLEAVED:
        i1 = 2 * j
        i2 = 2 * j + 1
    else:
        i1 = j
        i2 = j + n2
    a = tl.load(x_ptr + x_row[:, None] + i1[None, :], mask=mask, other=0.0).to(tl.float32)
    bb = tl.load(x_ptr + x_row[:, None] + i2[None, :], mask=mask, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + t_row[:, None] + j[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + t_row[:, None] + j[None, :], mask=mask, other=0.0).to(tl.float32)
    ac = a * c
    bs = bb * s
    bc = bb * c
    as_ = a * s
    dt = x_ptr.dtype.element_ty
    if EXACT:  # round each product to x's dtype, as q * cos + rotate_half(q) * sin in that dtype does
        ac = _round(ac, ROUND_BF16, dt)
        bs = _round(bs, ROUND_BF16, dt)
        bc = _round(bc, ROUND_BF16, dt)
        as_ = _round(as_, ROUND_BF16, dt)
    o1 = ac - bs
    o2 = bc + as_
    if ROUND_BF16:  # then the cast below is exact
        o1 = _round(o1, ROUND_BF16, dt)
        o2 = _round(o2, ROUND_BF16, dt)
    tl.store(out_ptr + o_row[:, None] + i1[None, :], o1.to(dt), mask=mask)
    tl.store(out_ptr + o_row[:, None] + i2[None, :], o2.to(dt), mask=mask)

    if COPY_TAIL:  # partial rotary, out of place: channels r..d pass through unchanged
        t = tl.arange(0, BLOCK_TAIL)
        tail_mask = row_ok[:, None] & (t < width - 2 * n2)[None, :]
        tail = tl.load(x_ptr + x_row[:, None] + 2 * n2 + t[None, :], mask=tail_mask)
        tl.store(out_ptr + o_row[:, None] + 2 * n2 + t[None, :], tail, mask=tail_mask)


def rotate_triton(
    x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None, interleaved: bool, upcast: bool
) -> None:
    """Rotate ``x`` ``[b, h, s, d]`` into ``out`` (same shape), or in place when ``out`` is ``None``.

    ``cos``/``sin``: ``[B, s, r/2]`` contiguous, float32 when ``upcast`` or ``x`` is float32, else in
    ``x.dtype``.
    """
    b, h, s, d = x.shape
    n2 = cos.shape[-1]
    n_rows = b * h * s
    if n_rows == 0:
        return
    target = x if out is None else out
    block_pairs = triton.next_power_of_2(n2)
    block_rows = min(max(1, 4096 // block_pairs), triton.next_power_of_2(n_rows))
    copy_tail = out is not None and 2 * n2 < d
    grid = (triton.cdiv(n_rows, block_rows),)
    _rope_kernel[grid](
        x,
        target,
        cos,
        sin,
        n_rows,
        h,
        s,
        n2,
        d,
        *x.stride()[:3],
        *target.stride()[:3],
        0 if cos.shape[0] == 1 else cos.stride(0),
        cos.stride(1),
        INTERLEAVED=interleaved,
        EXACT=not upcast and x.element_size() < 4,
        ROUND_BF16=x.dtype == torch.bfloat16,
        COPY_TAIL=copy_tail,
        BLOCK_ROWS=block_rows,
        BLOCK_PAIRS=block_pairs,
        BLOCK_TAIL=triton.next_power_of_2(max(d - 2 * n2, 1)),
        enable_fp_fusion=False,
    )
