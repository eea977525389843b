"""The blockwise attention engine: causal attention one query block at a time.

Attention variants whose scores are not a plain ``q k^T`` (ALiBi's bias, ReRoPE's and Self-Extend's two
merged score matrices) would, written directly, hold float ``[b, h, L, L]`` tensors: 2 GiB each at
L = 8192 with 8 heads. The engine asks the variant for the scores of one block of ``B`` queries at a time,
``[b, h, B, n_k]`` float32, masks them causally, takes the softmax in float32 and multiplies by ``v``, so
memory grows with ``B * L``, not ``L^2``. When the key positions are sorted (the usual case, also with a
KV cache), ``n_k`` is only the causal prefix of the keys: those at positions ``<=`` the block's last query.

Peak memory: about two score blocks at a time (the scores, masked in place, and their softmax); the
variants add at most one more while they build a block. Autograd works through the engine (no in-place
operation touches a tensor that backward needs); the backward pass keeps each block's probabilities, so
training memory is still ``O(L^2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ropelab.attention.sdpa import as_2d, repeat_kv
from ropelab.errors import RopeConfigError

__all__ = ["BlockScores", "auto_block_size", "blockwise_attention", "visible_keys"]

#: ``(query slice, n_k) -> scores [b, h, B, n_k]``, float32 (float64 for float64 inputs): scaled, with any
#: bias, before the causal mask.
#: The engine masks the returned tensor in place, so its last operation must not save its output for
#: backward (matmul, add, mul by a constant, ``where`` and copies are fine; ``exp`` would not be).
BlockScores = Callable[[slice, int], Tensor]

#: Default budget for one float32 score block ``[b, h, B, s_k]``: 2^24 elements (64 MiB).
BLOCK_ELEMENTS = 1 << 24
MIN_BLOCK, MAX_BLOCK = 16, 1024


def auto_block_size(batch: int, heads: int, s_q: int, s_k: int) -> int:
    """Queries per block so that one ``[batch, heads, B, s_k]`` float32 score block stays within
    :data:`BLOCK_ELEMENTS` (clamped to ``[16, 1024]`` and to ``s_q``)."""
    block = BLOCK_ELEMENTS // max(1, batch * heads * s_k)
    return max(1, min(s_q, max(MIN_BLOCK, min(MAX_BLOCK, block))))


def visible_keys(k_positions: Tensor, q_block_positions: Tensor) -> int:
    """Number of leading keys any query of the block can see, for sorted ``k_positions`` ``[b|1, s_k]``.

    ``q_block_positions``: ``[b|1, B]``. Keys are sorted per row, so the visible ones are a prefix.
    """
    top = q_block_positions.amax(dim=-1, keepdim=True)  # [b|1, 1]
    if k_positions.shape[0] == 1:
        top = top.amax(dim=0, keepdim=True)
    else:
        top = top.expand(k_positions.shape[0], 1).contiguous()
    return int(torch.searchsorted(k_positions, top, right=True).max())


def blockwise_attention(
    block_scores: BlockScores,
    v: Tensor,
    q_positions: Tensor,
    k_positions: Tensor,
    *,
    n_heads: int,
    block_size: int | None = None,
) -> Tensor:
    """Causal attention from per-block scores -> ``[b, n_heads, s_q, hd_v]`` in ``v.dtype``.

    Args:
        block_scores: ``(qs, n_k) -> [b, n_heads, len(qs), n_k]`` float32 (or float64) scores of the
            queries in slice ``qs`` against the first ``n_k`` keys (scaled, bias added, not yet masked).
        v: ``[b, h_kv, s_k, hd_v]`` (``n_heads`` a multiple of ``h_kv``).
        q_positions, k_positions: int64 ``[s]`` or ``[b, s]``; query ``i`` sees keys at positions ``<= i``.
        block_size: queries per block; ``None`` picks :func:`auto_block_size`; ``>= s_q`` gives the
            materialised computation (one block, full ``[b, h, s_q, s_k]`` scores).

    Queries that see no key at all get a zero output row.
    """
    qp, kp = as_2d(q_positions), as_2d(k_positions).contiguous()
    b, _, s_k, hd_v = v.shape
    s_q = qp.shape[-1]
    if block_size is None:
        block_size = auto_block_size(b, n_heads, s_q, s_k)
    if int(block_size) != block_size or block_size < 1:
        raise RopeConfigError(
            f"block_size must be a positive integer (queries per block), got {block_size!r}"
        )
    block_size = int(block_size)
    v = repeat_kv(v, n_heads)
    keys_sorted = s_k < 2 or bool((kp[:, 1:] >= kp[:, :-1]).all())
    blocks = []
    for start in range(0, s_q, block_size):
        qs = slice(start, min(start + block_size, s_q))
        qp_block = qp[:, qs]
        n_k = visible_keys(kp, qp_block) if keys_sorted else s_k
        if n_k == 0:
            blocks.append(v.new_zeros(b, n_heads, qs.stop - qs.start, hd_v))
            continue
        scores = block_scores(qs, n_k)  # [b, h, B, n_k] float32
        visible = kp[:, None, :n_k] <= qp_block[:, :, None]  # [b|1, B, n_k]
        scores.masked_fill_(visible.logical_not()[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        empty = visible.logical_not().all(dim=-1)  # [b|1, B]: rows with no visible key
        if bool(empty.any()):
            probs = probs.masked_fill(empty[:, None, :, None], 0.0)
        blocks.append(probs.to(v.dtype) @ v[:, :, :n_k])
    if not blocks:
        return v.new_empty(b, n_heads, 0, hd_v)
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
