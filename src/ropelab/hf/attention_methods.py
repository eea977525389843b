"""ReRoPE, leaky ReRoPE and Self-Extend inside a transformers model (through ropelab's attention function)."""

from __future__ import annotations

import torch

from ropelab.attention import rerope_attention, self_extend_attention
from ropelab.errors import RopeConfigError
from ropelab.hf.extension import Extension


def attention_level(
    ext: Extension,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """``[b, h, s_q, hd]`` attention of unrotated q/k with the extension's attention method.

    The methods are causal by position; a mask that hides more than that (left padding) is refused
    rather than silently ignored.
    """
    if attention_mask is not None:
        causal = (k_pos[:, None, :] <= q_pos[:, :, None])[:, None]
        mask = attention_mask[..., : key.shape[2]]
        keep = mask if mask.dtype == torch.bool else mask == 0
        if not torch.equal(keep.expand_as(causal) | ~causal, torch.ones_like(causal)):
            raise RopeConfigError(
                f"{ext.name} does not support padded batches yet: evaluate one sequence at a time"
            )
    common = {"log_n": ext.rope.config.log_n, "scale": scaling}
    if ext.attention in ("rerope", "leaky-rerope"):
        assert ext.window is not None
        return rerope_attention(
            query, key, value, q_pos, k_pos, ext.rope, window=ext.window, leak=ext.leak, **common
        )
    if ext.attention == "self-extend":
        assert ext.window is not None and ext.group is not None
        return self_extend_attention(
            query, key, value, q_pos, k_pos, ext.rope, group=ext.group, window=ext.window, **common
        )
    raise RopeConfigError(f"unknown attention method {ext.attention!r}")
