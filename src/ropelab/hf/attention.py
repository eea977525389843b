"""ropelab's attention function for transformers models: rotation inside attention, keys cached unrotated.

Registered per extended model under a unique name in transformers' ``AttentionInterface`` (and its
mask function in ``AttentionMaskInterface``), so it applies to exactly the model that selected it.
The modeling code hands it q ``[b, h, s_q, hd]`` and the whole (cached) k, v ``[b, h_kv, s_k, hd]``,
all unrotated (the model's rotary module was replaced by the identity); it keeps the position of
every cached key per layer and rotates q and k with the frequencies of the current length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ropelab.hf.attention_methods import attention_level
from ropelab.hf.extension import Extension
from ropelab.rope.apply import rotate


def _key_positions(
    store: dict[int, torch.Tensor], layer: int, q_pos: torch.Tensor, k_len: int
) -> torch.Tensor:
    """Positions of all keys ``[b, s_k]``: the cached ones of this layer followed by the new ones."""
    b, s_q = q_pos.shape
    prev = store.get(layer)
    if k_len == s_q:
        k_pos = q_pos
    elif prev is not None and prev.shape[0] == b and prev.shape[1] + s_q == k_len:
        k_pos = torch.cat((prev, q_pos), dim=1)
    else:  # a cache we did not see filled: assume contiguous positions before the new tokens
        start = q_pos[:, :1] - (k_len - s_q)
        k_pos = torch.cat((start + torch.arange(k_len - s_q, device=q_pos.device), q_pos), dim=1)
    store[layer] = k_pos
    return k_pos


def _plain_causal(q_pos: torch.Tensor, k_pos: torch.Tensor) -> bool:
    """True when the position mask ``k_pos <= q_pos`` is the index-causal one: queries and keys are the
    same tokens (a one-pass prefill) with strictly increasing positions. Then SDPA's ``is_causal`` gives
    the same output (bit for bit on PyTorch's CPU kernels) without an ``[s_q, s_k]`` mask, whose
    presence makes the kernel score every masked pair too: 2.2x the time of the causal call at 4096
    tokens on this project's CPU (``benchmarks/attention_speed.py`` measures the model)."""
    if q_pos.shape != k_pos.shape or q_pos.shape[1] < 2 or not torch.equal(q_pos, k_pos):
        return False
    return bool((k_pos[:, 1:] > k_pos[:, :-1]).all())


def make_attention(ext: Extension) -> Any:
    """The attention function for one extension (a closure over its Rope and key-position store)."""
    rope = ext.rope
    store: dict[int, torch.Tensor] = {}

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        b, h, s_q, _ = query.shape
        k_len = key.shape[2]
        q_pos = kwargs.get("position_ids")
        if q_pos is None:
            q_pos = torch.arange(k_len - s_q, k_len, device=query.device)
        q_pos = q_pos.to(query.device).expand(b, s_q) if q_pos.dim() == 2 else q_pos.expand(b, s_q)
        k_pos = _key_positions(store, getattr(module, "layer_idx", 0) or 0, q_pos, k_len)
        # a chunked prefill (evaluate/nll.py) names the length of the whole pass, so dynamic methods rotate
        # every chunk with the one-pass frequencies; otherwise the length is that of the keys so far
        seq_len = max(int(k_pos.max()) + 1, int(kwargs.get("ropelab_seq_len") or 0))
        if ext.attention != "rope":
            out = attention_level(ext, query, key, value, q_pos, k_pos, attention_mask, scaling)
            return out.transpose(1, 2).contiguous(), None
        cos_q, sin_q = rope.cos_sin(q_pos, dtype=query.dtype, seq_len=seq_len, precision=ext.precision)
        cos_k, sin_k = rope.cos_sin(k_pos, dtype=key.dtype, seq_len=seq_len, precision=ext.precision)
        q = rotate(query, cos_q, sin_q)
        k = rotate(key, cos_k, sin_k)
        if rope.config.log_n:
            q = q * rope.query_scale(q_pos)[:, None, :, None].to(q.dtype)
        mask, causal = attention_mask, False
        if mask is None:
            causal = _plain_causal(q_pos, k_pos)
            if not causal and not (s_q == 1 and bool((k_pos <= q_pos).all())):
                mask = (k_pos[:, None, :] <= q_pos[:, :, None])[:, None]  # [b, 1, s_q, s_k]
        elif mask.dtype == torch.bool:
            mask = mask[..., :k_len]
        out = F.scaled_dot_product_attention(
            q,
            k,
            value,
            attn_mask=mask,
            dropout_p=0.0,
            is_causal=causal,
            scale=scaling,
            enable_gqa=k.shape[1] != h,
        )
        return out.transpose(1, 2).contiguous(), None

    return attention


def register_attention(name: str, ext: Extension) -> None:
    """Register ``name`` in transformers' attention and attention-mask interfaces."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, make_attention(ext))
    AttentionMaskInterface.register(name, sdpa_mask)
