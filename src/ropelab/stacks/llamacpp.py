"""llama.cpp: what ``convert_hf_to_gguf.py`` writes for a config, and what ggml's rope then computes.

Read (semantics only) from github.com/ggml-org/llama.cpp, master as indexed (``convert_hf_to_gguf.py``
at 0024aa74; ``llama-context.cpp`` after PR #17945 / #18006; ggml ``rope_yarn`` in ggml-cpu ops.cpp):

Converter (``TextModel.set_gguf_parameters``): ``linear`` writes scaling type LINEAR and ``factor``
(freq_scale = 1/factor); ``yarn`` writes YARN, ``factor``, ``original_max_position_embeddings`` as
the original context, ``beta_fast`` / ``beta_slow`` if given and ``attention_factor`` as
``rope.scaling.yarn_attn_factor``; ``mscale`` / ``mscale_all_dim`` and ``truncate`` are not written
(DeepSeek-2's model class writes ``0.1 * mscale_all_dim`` as ``yarn_log_multiplier``); ``longrope`` is
written only by the Phi-3 classes: LONGROPE, ``rope_factors_long`` / ``rope_factors_short`` tensors
and ``rope.scaling.attn_factor = sqrt(1 + ln(s)/ln(orig))`` with s = max_pos / orig (``factor`` and
``attention_factor`` not read); ``llama3`` writes a ``rope_freqs`` tensor
``1/((1-smooth)/factor + smooth)`` (1 or factor outside the band) with L0 read from the *top-level*
``original_max_position_embeddings`` (default 8192, the rope parameters' own value is not read) and
no scaling type; ``dynamic`` writes nothing (left to Hunyuan's model class); any other type logs
"Unknown RoPE type" and writes no scaling. The context length written is ``max_position_embeddings``.

Runtime: ``llama_context`` with YaRN active *overwrites* ``yarn_attn_factor`` by
``get_mscale(s, mscale) / get_mscale(s, log_mul)`` (``get_mscale(s)`` when ``log_mul`` is 0; mscale
taken as 1, or as log_mul for DeepSeek-2 when log_mul != 1), divides by ``1 + 0.1 ln s`` (which ggml
multiplies back), then multiplies by the GGUF ``rope.scaling.attn_factor``. ggml ``rope_yarn``:
theta_i = theta_scale^i by repeated float32 products (theta_scale = powf(base, -2/d)), divided by the
frequency factor tensor, interpolated by freq_scale; YaRN ramps between ``floorf`` / ``ceilf`` of the
correction dims (always) with ``max(0.001, high - low)``. LongRoPE picks the long factors when the
context size ``n_ctx`` (default: the trained context = max_position_embeddings) exceeds the original
context, for every position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ropelab.rope.frequencies import longrope_attention, yarn_mscale
from ropelab.stacks.config import ModelRope, StackEval, StackPlan

STACK = "llama.cpp"
SOURCE = "llama.cpp master (convert_hf_to_gguf.py 0024aa74, llama-context.cpp after PR #17945/#18006)"

_F32 = np.float32


def ggml_theta(base: float, n_dims: int) -> np.ndarray:
    """ggml's per-pair base angles at position 1: theta_scale^i by repeated float32 products, ``[d/2]``."""
    scale = _F32(np.power(_F32(base), _F32(-2.0) / _F32(n_dims)))
    out = np.empty(n_dims // 2, dtype=_F32)
    theta = _F32(1.0)
    for i in range(n_dims // 2):
        out[i] = theta
        theta = _F32(theta * scale)
    return out


def ggml_corr_dims(n_dims: int, n_ctx_orig: int, base: float, beta_fast: float, beta_slow: float) -> tuple:
    """ggml_rope_yarn_corr_dims: floorf / ceilf of the YaRN correction dims, float32 logs."""

    def dim_of(rot: float) -> float:
        return float(
            _F32(n_dims)
            * np.log(_F32(n_ctx_orig) / (_F32(rot) * _F32(2) * _F32(math.pi)))
            / (_F32(2) * np.log(_F32(base)))
        )

    return max(0.0, math.floor(dim_of(beta_fast))), min(n_dims - 1.0, math.ceil(dim_of(beta_slow)))


def ggml_rope_inv_freq(
    base: float,
    n_dims: int,
    *,
    freq_scale: float = 1.0,
    freq_factors: Sequence[float] | None = None,
    yarn: tuple[int, float, float] | None = None,
) -> torch.Tensor:
    """ggml's angle per position for each pair, float64 ``[d/2]``.

    ``yarn``: (original context, beta_fast, beta_slow) to ramp as ggml's rope_yarn does.
    """
    extrap = ggml_theta(base, n_dims)
    if freq_factors is not None:
        extrap = (extrap / np.asarray(freq_factors, dtype=_F32)).astype(_F32)
    interp = (_F32(freq_scale) * extrap).astype(_F32)
    if yarn is None:
        return torch.from_numpy(interp.astype(np.float64))
    n_ctx_orig, beta_fast, beta_slow = yarn
    low, high = ggml_corr_dims(n_dims, n_ctx_orig, base, beta_fast, beta_slow)
    pair = np.arange(n_dims // 2, dtype=_F32)
    y = (pair - _F32(low)) / _F32(max(0.001, high - low))
    ramp = (_F32(1) - np.minimum(_F32(1), np.maximum(_F32(0), y))).astype(_F32)
    theta = interp * (_F32(1) - ramp) + extrap * ramp
    return torch.from_numpy(theta.astype(np.float64))


def _is_phi3(model: ModelRope) -> bool:
    return model.model_type in ("phi3", "phimoe") or any(
        a.startswith(("Phi3", "PhiMoE")) for a in model.architectures
    )


def _is_deepseek2(model: ModelRope) -> bool:
    return (model.model_type or "").startswith("deepseek_v") or any(
        a.startswith(("DeepseekV2", "DeepseekV3")) for a in model.architectures
    )


def plan(model: ModelRope, lengths: Sequence[int]) -> StackPlan:
    """What llama.cpp computes for the GGUF the converter writes from ``model``, at ``lengths``."""
    rope_type = "longrope" if model.rope_type == "su" else model.rope_type
    d, base = model.rotary_dim, model.base
    n_ctx = model.max_position_embeddings
    factor = float(model.param("factor", 1.0))
    why: list[str] = []
    detail: dict = {"rope.freq_base": base, "context_length": n_ctx}
    rule = "one static table"
    attention = 1.0
    if rope_type in ("linear", "yarn") and model.rope_parameters.get("factor") is None:
        detail["rope.scaling.type"] = f"none (the converter writes {rope_type} only with a 'factor')"
        table = ggml_rope_inv_freq(base, d)
        why.append(f"the converter writes no scaling for {rope_type} without 'factor': plain RoPE")
    elif rope_type == "default":
        detail["rope.scaling.type"] = "none"
        table = ggml_rope_inv_freq(base, d)
    elif rope_type == "linear":
        detail.update({"rope.scaling.type": "linear", "rope.scaling.factor": factor})
        table = ggml_rope_inv_freq(base, d, freq_scale=1.0 / factor)
    elif rope_type == "yarn":
        original = model.original or n_ctx
        assert original is not None
        beta_fast = float(model.param("beta_fast", 32.0))
        beta_slow = float(model.param("beta_slow", 1.0))
        detail.update(
            {
                "rope.scaling.type": "yarn",
                "rope.scaling.factor": factor,
                "rope.scaling.original_context_length": original,
                "rope.scaling.yarn_beta_fast": beta_fast,
                "rope.scaling.yarn_beta_slow": beta_slow,
            }
        )
        table = ggml_rope_inv_freq(base, d, freq_scale=1.0 / factor, yarn=(original, beta_fast, beta_slow))
        # DeepSeek-2's converter writes 0.1 * mscale_all_dim as yarn_log_multiplier; llama_context then sets
        # the rope factor to get_mscale(s, m) / get_mscale(s, log_mul) with m = log_mul (DeepSeek-2 when
        # log_mul != 1) or 1 (log_mul == 1): 1 either way, the magnitude goes to kq_scale in the graph
        log_mul = 0.1 * float(model.param("mscale_all_dim", 0.0)) if _is_deepseek2(model) else 0.0
        if log_mul:
            detail["rope.scaling.yarn_log_multiplier"] = log_mul
            mscale = log_mul if log_mul != 1.0 else 1.0
            attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, log_mul)
            rule = "one static table (DeepSeek-2: the YaRN magnitude goes to kq_scale)"
        else:
            attention = yarn_mscale(factor)
        if model.rope_parameters.get("attention_factor") is not None:
            detail["rope.scaling.yarn_attn_factor"] = model.rope_parameters["attention_factor"]
            why.append(
                "llama.cpp overwrites the YaRN attention factor with 0.1 ln s + 1 (PR #17945); the converted "
                "yarn_attn_factor is not applied (only rope.scaling.attn_factor, set by --override-kv, "
                "multiplies)"
            )
        if (
            model.rope_parameters.get("mscale")
            and model.rope_parameters.get("mscale_all_dim")
            and not log_mul
        ):
            why.append("the converter does not write mscale/mscale_all_dim for this architecture")
        if model.rope_parameters.get("truncate") is False:
            why.append(
                "ggml always floors/ceils the YaRN correction dims (truncate=false cannot be expressed)"
            )
    elif rope_type == "llama3":
        top = model.text.get("original_max_position_embeddings")
        old_ctx = int(top) if top is not None else 8192
        low_f = float(model.param("low_freq_factor", 1.0))
        high_f = float(model.param("high_freq_factor", 4.0))
        l3_factor = float(model.param("factor", 8.0))
        freqs = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        factors = []
        for freq in freqs.tolist():
            wavelen = 2 * math.pi / freq
            if wavelen < old_ctx / high_f:
                factors.append(1.0)
            elif wavelen > old_ctx / low_f:
                factors.append(l3_factor)
            else:
                smooth = (old_ctx / wavelen - low_f) / (high_f - low_f)
                factors.append(1 / ((1 - smooth) / l3_factor + smooth))
        detail.update(
            {"rope.scaling.type": "none", "rope_freqs": f"tensor [{d // 2}] (Llama-3 factors, L0={old_ctx})"}
        )
        table = ggml_rope_inv_freq(base, d, freq_factors=factors)
        if old_ctx != model.original:
            why.append(
                "the converter reads L0 for the rope_freqs tensor from the top-level "
                f"original_max_position_embeddings (default 8192), not rope_scaling's {model.original}"
            )
    elif rope_type == "longrope":
        return _longrope(model, lengths)
    elif rope_type == "dynamic":
        detail["rope.scaling.type"] = "none (the converter writes nothing for 'dynamic')"
        table = ggml_rope_inv_freq(base, d)
        why.append(
            "llama.cpp has no dynamic NTK; the converter writes no scaling, so it runs plain RoPE at "
            "every length"
        )
    else:
        detail["rope.scaling.type"] = f"none (converter: 'Unknown RoPE type: {rope_type}')"
        table = ggml_rope_inv_freq(base, d)
        why.append(f"the converter does not know rope_type {rope_type!r} and writes no scaling: plain RoPE")
    evals = tuple(StackEval(int(n), table, float(attention)) for n in lengths)
    return StackPlan(STACK, SOURCE, evals=evals, max_length=n_ctx, rule=rule, why=tuple(why), detail=detail)


def _longrope(model: ModelRope, lengths: Sequence[int]) -> StackPlan:
    if not _is_phi3(model):
        return StackPlan(
            STACK,
            SOURCE,
            cannot="the converter writes LongRoPE factor tensors only for Phi-3 architectures "
            "(model_type phi3)",
        )
    d, base = model.rotary_dim, model.base
    original = model.original
    n_ctx = model.max_position_embeddings
    assert original is not None and n_ctx is not None
    scale = n_ctx / original
    attn = longrope_attention(scale, original)
    use_long = n_ctx > original
    factors = model.param("long_factor") if use_long else model.param("short_factor")
    table = ggml_rope_inv_freq(base, d, freq_factors=factors)
    why = []
    if use_long:
        why.append(
            f"llama.cpp uses the long factors for every position once n_ctx > {original}, and n_ctx "
            f"defaults to {n_ctx} (pass -c {original} for the short ones)"
        )
    if model.rope_parameters.get("attention_factor") is not None:
        why.append(
            "the converter writes sqrt(1 + ln s / ln L0) as rope.scaling.attn_factor, ignoring "
            "attention_factor"
        )
    detail = {
        "rope.scaling.type": "longrope",
        "rope.scaling.attn_factor": attn,
        "rope_factors_long/short": f"tensors [{d // 2}]",
        "context_length": n_ctx,
    }
    rule = f"long factors at every position if n_ctx > {original} (default n_ctx {n_ctx}), else short"
    evals = tuple(StackEval(int(n), table, float(attn)) for n in lengths)
    return StackPlan(STACK, SOURCE, evals=evals, max_length=n_ctx, rule=rule, why=tuple(why), detail=detail)
