"""Attention-level position methods as pure functions, and the blockwise engine behind them.

    alibi_slopes(n_heads)                                          # float32 [n_heads]
    alibi_attention(q, k, v, q_positions, k_positions, slopes)     # Press et al. 2021
    rope_attention(q, k, v, q_positions, k_positions, rope, layout="half", log_n=None)
    rerope_attention(..., rope, window=w, leak=None)               # ReRoPE / leaky ReRoPE (Su)
    self_extend_attention(..., rope, group=G, window=W)            # Jin et al. 2024
    log_n_scale(positions, trained_length)                         # Su, kexue.fm 9706

Shapes: ``q`` ``[b, h, s_q, hd]``, ``k``/``v`` ``[b, h_kv, s_k, hd]`` unrotated; positions int64 ``[s]`` or
``[b, s]``; output ``[b, h, s_q, hd]``, causal by position. ReRoPE and Self-Extend run as two fused
attentions merged by log-sum-exp where :func:`ropelab.attention.merged.merged_attention_supported`
(CPU, contiguous positions, no autograd), else through the blockwise engine. Slow direct references
for checks live in :mod:`ropelab.attention.reference`.
"""

from ropelab.attention.blockwise import BlockScores, auto_block_size, blockwise_attention
from ropelab.attention.methods import (
    alibi_attention,
    alibi_bias,
    alibi_slopes,
    rerope_attention,
    rope_attention,
    self_extend_attention,
    split_rotary_attention,
)
from ropelab.attention.registry import ATTENTION_METHODS, AttentionMethod
from ropelab.attention.sdpa import causal_sdpa, repeat_kv
from ropelab.attention.tables import log_n_scale, rope_tables

__all__ = [
    "ATTENTION_METHODS",
    "AttentionMethod",
    "BlockScores",
    "alibi_attention",
    "alibi_bias",
    "alibi_slopes",
    "auto_block_size",
    "blockwise_attention",
    "causal_sdpa",
    "log_n_scale",
    "repeat_kv",
    "rerope_attention",
    "rope_attention",
    "rope_tables",
    "self_extend_attention",
    "split_rotary_attention",
]
