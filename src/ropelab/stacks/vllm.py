"""vLLM: which table ``get_rope`` builds for a config, written from vLLM's public source (not installed).

Read (semantics only, no code copied) from github.com/vllm-project/vllm:

- ``vllm/model_executor/layers/rotary_embedding/__init__.py`` ``get_rope`` at commit 926c71f6: the
  dispatch on ``rope_type`` and which keys reach each class. For ``yarn`` only
  ``extrapolation_factor``, ``attn_factor``, ``beta_fast``, ``beta_slow``, ``apply_yarn_scaling`` and
  ``truncate`` are forwarded (not ``attention_factor``, ``mscale``, ``mscale_all_dim``); ``longrope``
  gets only ``short_mscale`` / ``long_mscale``; ``deepseek_yarn`` gets ``mscale`` / ``mscale_all_dim``.
- ``yarn_scaling_rope.py`` (class with ``attn_factor`` / ``apply_yarn_scaling``, as at 926c71f6) and
  ``common.py`` at 002d181a: ramp between ``floor``/``ceil`` of the correction dims (``truncate``
  forwarded), cos/sin times ``yarn_get_mscale(s) * attn_factor``; ``yarn_get_mscale(s) = 0.1 ln s + 1``.
- ``deepseek_scaling_rope.py`` at 00d678e1: always floor/ceil; cos/sin times
  ``get_mscale(s, mscale) / get_mscale(s, mscale_all_dim) * attn_factor`` with defaults
  ``mscale=1``, ``mscale_all_dim=0`` (so ``mscale`` alone gives ``0.1*mscale*ln s + 1``). DeepSeek
  model code renames ``yarn`` to ``deepseek_yarn``.
- ``dynamic_ntk_scaling_rope.py`` at 3cfbaf33: one static table for ``max_position * s`` positions with
  base ``b * ((s*L/L) - (s-1))^(d/(d-2)) = b`` (older versions had ``b * (s*s - (s-1))^(d/(d-2))``).
- ``ntk_scaling_rope.py`` at 03587f55: NTK-mixed; without ``mixed_b`` base ``b*s`` and ``/ s^(2/d)``.
- ``phi3_long_rope_scaled_rope.py`` at 17d618b0: long factors for *every* position when
  ``max_model_len > original_max_position_embeddings``; cos/sin times ``short_mscale`` /
  ``long_mscale``, default ``sqrt(1 + ln(max_pos/orig) / ln orig)`` (``factor`` and
  ``attention_factor`` are not read).
- ``llama3_rope.py`` at 045d7575 (same formula as transformers), ``base.py`` at 04458da0.
- ``vllm/config`` ``_get_and_verify_max_len``: except for ``longrope`` / ``llama3`` the derived
  ``max_model_len`` is ``max_position_embeddings * factor`` (``original * factor`` for ``yarn``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ropelab.rope.frequencies import longrope_attention, yarn_mscale  # vLLM's yarn_get_mscale (00d678e1)
from ropelab.stacks.config import ModelRope, StackEval, StackPlan, base_inv_freq64

STACK = "vLLM"
SOURCE = "vLLM main, rotary_embedding/ read at get_rope 926c71f6 (see module doc)"

#: rope types vLLM's get_rope dispatches (926c71f6), besides multimodal / model-specific ones
KNOWN = ("default", "linear", "dynamic", "ntk", "yarn", "deepseek_yarn", "llama3", "longrope")


def _yarn_inv_freq(model: ModelRope, scale: float, original: int, truncate: bool) -> torch.Tensor:
    """vLLM YaRN ramp (yarn_scaling_rope / common.py): float32 [d/2] as float64."""
    d, base = model.rotary_dim, model.base
    beta_fast = model.param("beta_fast", 32)
    beta_slow = model.param("beta_slow", 1)

    def dim_of(rotations: float) -> float:
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = (1 - ramp) * float(model.param("extrapolation_factor", 1))
    pos_freqs = base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    return ((1.0 / (scale * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep).double()


def _is_deepseek(model: ModelRope) -> bool:
    return (model.model_type or "").startswith("deepseek") or any(
        "Deepseek" in a for a in model.architectures
    )


def max_model_len(model: ModelRope) -> int | None:
    """vLLM's derived max_model_len (``_get_and_verify_max_len``)."""
    max_pos = model.max_position_embeddings
    rope_type = model.rope_type
    if rope_type in ("su", "longrope", "llama3"):
        return max_pos
    factor = float(model.param("factor", 1.0))
    length = model.original if rope_type == "yarn" else max_pos
    return int(length * factor) if length else None


def plan(model: ModelRope, lengths: Sequence[int]) -> StackPlan:
    """The table vLLM builds for ``model``, evaluated at ``lengths``."""
    rope_type = "longrope" if model.rope_type == "su" else model.rope_type
    if rope_type == "yarn" and _is_deepseek(model):
        rope_type = "deepseek_yarn"
    if rope_type not in KNOWN:
        return StackPlan(STACK, SOURCE, cannot=f"vLLM's get_rope has no rope_type {model.rope_type!r}")
    if rope_type == "dynamic" and "alpha" in model.rope_parameters:
        return StackPlan(
            STACK, SOURCE, cannot="Hunyuan's dynamic 'alpha' (static NTK) is not a ropelab method"
        )
    if rope_type in ("linear", "dynamic", "ntk", "yarn", "deepseek_yarn", "llama3") and (
        model.rope_parameters.get("factor") is None
    ):
        return StackPlan(
            STACK, SOURCE, cannot=f"get_rope reads rope_parameters['factor'] for {rope_type!r} (KeyError)"
        )
    d, base = model.rotary_dim, model.base
    factor = float(model.param("factor", 1.0))
    served = max_model_len(model)
    why: list[str] = []
    rule = "one static table"
    attention = 1.0
    if rope_type == "default":
        table = base_inv_freq64(base, d)
    elif rope_type == "linear":
        table = (base_inv_freq64(base, d).float() / factor).double()
    elif rope_type == "dynamic":
        # 3cfbaf33: b * ((max_len / max_pos) - (s - 1)) ** (d/(d-2)) with max_len = max_pos * s, i.e. plain b
        ratio = factor  # max_len / max_pos
        dyn_base = base * (ratio - (factor - 1)) ** (d / (d - 2))
        table = base_inv_freq64(dyn_base, d)
        rule = f"one static table for {served} positions (never grows)"
        why.append(
            "vLLM's dynamic is one static table (the plain base in the version read), not a base "
            "that grows with the length"
        )
    elif rope_type == "ntk":
        mixed_b = model.rope_parameters.get("mixed_b")
        if mixed_b is None:
            table = (base_inv_freq64(base * factor, d).float() / factor ** (2 / d)).double()
            why.append(
                "vLLM's 'ntk' is NTK-mixed with exponent 1 (theta_j / s^(2j/d)), not bloc97's base change"
            )
        else:
            a = math.log(factor) / (d / 2) ** mixed_b
            lam = torch.exp(a * torch.arange(1, d // 2 + 1, dtype=torch.float64) ** mixed_b)
            table = (base_inv_freq64(base, d) / lam).float().double()
    elif rope_type in ("yarn", "deepseek_yarn"):
        original = model.original or model.max_position_embeddings
        assert original is not None
        attn = float(model.param("attn_factor", 1.0))
        if rope_type == "yarn":
            truncate = bool(model.param("truncate", True))
            table = _yarn_inv_freq(model, factor, original, truncate)
            apply = bool(model.param("apply_yarn_scaling", True))
            attention = (yarn_mscale(factor) if apply else 1.0) * attn
            for key in ("attention_factor", "mscale", "mscale_all_dim"):
                if model.rope_parameters.get(key) is not None:
                    why.append(f"get_rope does not pass {key!r} to YaRN (cos/sin get 0.1 ln s + 1)")
        else:
            table = _yarn_inv_freq(model, factor, original, truncate=True)
            mscale = float(model.param("mscale", 1.0))
            mscale_all_dim = float(model.param("mscale_all_dim", 0.0))
            attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim) * attn
            rule = "one static table (deepseek_yarn, always floor/ceil)"
            if model.rope_parameters.get("mscale") and not model.rope_parameters.get("mscale_all_dim"):
                why.append(
                    "DeepSeek YaRN with mscale alone: vLLM applies 0.1*mscale*ln s + 1, transformers "
                    "0.1 ln s + 1"
                )
            if model.rope_parameters.get("attention_factor") is not None:
                why.append("deepseek_yarn ignores attention_factor")
            if model.rope_parameters.get("truncate") is False:
                why.append("deepseek_yarn always truncates (truncate=false is not forwarded)")
    elif rope_type == "llama3":
        inv = base_inv_freq64(base, d).float()
        original = model.original
        assert original is not None
        low_f, high_f = float(model.param("low_freq_factor")), float(model.param("high_freq_factor"))
        wave = 2 * math.pi / inv
        smooth = (original / wave - low_f) / (high_f - low_f) if low_f != high_f else torch.zeros_like(inv)
        table = torch.where(
            wave < original / high_f,
            inv,
            torch.where(wave > original / low_f, inv / factor, (1 - smooth) * inv / factor + smooth * inv),
        ).double()
    else:  # longrope
        return _longrope(model, lengths)
    evals = tuple(StackEval(int(n), table, float(attention)) for n in lengths)
    return StackPlan(STACK, SOURCE, evals=evals, max_length=served, rule=rule, why=tuple(why))


def _longrope(model: ModelRope, lengths: Sequence[int]) -> StackPlan:
    d, base = model.rotary_dim, model.base
    original = model.original
    max_pos = model.max_position_embeddings
    assert original is not None and max_pos is not None
    served = max_model_len(model) or max_pos
    use_long = served > original
    scale = max_pos / original
    default = longrope_attention(scale, original)
    short_m = float(model.param("short_mscale", default))
    long_m = float(model.param("long_mscale", default))
    factors = model.param("long_factor") if use_long else model.param("short_factor")
    shape = base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    table = (1.0 / (torch.tensor(factors, dtype=torch.float32) * shape)).double()
    attention = long_m if use_long else short_m
    why = []
    if use_long:
        why.append(
            f"vLLM uses the long factors for every position since max_model_len {served} > "
            f"original {original}"
        )
    if model.rope_parameters.get("attention_factor") is not None:
        why.append("vLLM's longrope reads short_mscale/long_mscale, not attention_factor")
    if model.rope_parameters.get("factor") is not None:
        why.append("vLLM's longrope derives its scale from max_position_embeddings/original, not 'factor'")
    rule = (
        f"long factors at every position (max_model_len {served} > original {original})"
        if use_long
        else "short factors at every position"
    )
    evals = tuple(StackEval(int(n), table, float(attention)) for n in lengths)
    return StackPlan(STACK, SOURCE, evals=evals, max_length=served, rule=rule, why=tuple(why))
