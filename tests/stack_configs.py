"""Model configs (config.json dicts) shared by test_stacks.py and test_check.py."""

from __future__ import annotations

from typing import Any


def llama31_8b() -> dict[str, Any]:
    """Meta-Llama-3.1-8B's config.json (RoPE-relevant keys as published)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }


def phi3_128k_style() -> dict[str, Any]:
    """Phi-3-mini-128k-instruct's layout: legacy ``rope_scaling`` with ``type: longrope``, L0 at top level.

    Geometry as published (hidden 3072, 32 heads -> head_dim 96, 4096 -> 131072); the 48 short/long
    factors are smooth stand-ins of the same shape (short near 1, long growing to ~60), not the
    published values.
    """
    short = [round(1.0 + (i / 47) ** 2, 4) for i in range(48)]
    long = [round(1.0 + 59.0 * (i / 47) ** 3, 4) for i in range(48)]
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "vocab_size": 32064,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
    }


def llama(rope_scaling: dict[str, Any] | None, *, max_pos: int = 16384, **top: Any) -> dict[str, Any]:
    """A Llama-architecture config with head_dim 128, base 10000 and the given ``rope_scaling``."""
    out: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "num_attention_heads": 16,
        "head_dim": 128,
        "max_position_embeddings": max_pos,
        "rope_theta": 10000.0,
    }
    if rope_scaling is not None:
        out["rope_scaling"] = rope_scaling
    out.update(top)
    return out


def deepseek_v3(**rope: Any) -> dict[str, Any]:
    """A DeepSeek-V3-shaped config (qk rope head dim 64 as head_dim here), YaRN s = 40 from 4096."""
    return {
        "model_type": "deepseek_v3",
        "architectures": ["DeepseekV3ForCausalLM"],
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "head_dim": 64,
        "qk_rope_head_dim": 64,
        "max_position_embeddings": 163840,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 40.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            **rope,
        },
    }
