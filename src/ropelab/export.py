"""The same RoPE method for the serving stacks: HF config, vLLM arguments, llama.cpp flags.

Each exporter either gives an exact equivalent or raises :class:`RopeConfigError` saying what the
stack cannot express. Exact means: the stack computes the same inverse frequencies and the same
attention factor as ``Rope.frequencies`` for this configuration. The one exception is a stack rule that
no config can change but that leaves the export useful (vLLM's server-wide LongRoPE factor set): the
result's ``differences`` states it precisely, and the CLI prints it; it is empty for exact exports.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ropelab.attention.registry import ATTENTION_METHODS
from ropelab.errors import RopeConfigError
from ropelab.rope.config import DEFAULT_MIXED_EXPONENT
from ropelab.rope.core import FULL_ATTENTION, Rope
from ropelab.rope.frequencies import yarn_mscale

FORMATS = ("hf", "vllm", "llama.cpp")


def _cannot(rope: Rope, stack: str, why: str) -> RopeConfigError:
    return RopeConfigError(f"{stack} cannot express method {rope.config.method!r}: {why}")


def _log_n_refusal(stack: str, method: str) -> RopeConfigError:
    return RopeConfigError(
        f"{stack} cannot express log-n: it scales each query by max(1, log n / log L0), which no RoPE "
        f"config carries; apply it with ropelab.hf.extend(model, {method!r}, log_n=True) or measure it with "
        f"`ropelab eval --method {method}+log-n`"
    )


def check_exportable(method: str) -> None:
    """Raise :class:`RopeConfigError` for a method name no serving config can carry, saying why and what
    to use instead: the attention-level methods of :data:`ropelab.attention.registry.ATTENTION_METHODS`
    and the ``+log-n`` suffix ``ropelab eval`` accepts. Frequency methods pass (and are checked later)."""
    name, plus, suffix = method.partition("+")
    if name in ATTENTION_METHODS:
        raise RopeConfigError(
            f"no serving config can express {name!r} ({ATTENTION_METHODS[name]}): it changes the attention "
            "scores, not the RoPE frequencies that rope_parameters, vLLM arguments and llama.cpp flags "
            f"describe; apply it with ropelab.hf.extend(model, {name!r}, ...) or measure it with "
            f"`ropelab eval --method {name}`"
        )
    if plus and suffix == "log-n":
        raise _log_n_refusal("a serving config", name)


def to_hf(rope: Rope) -> dict[str, Any]:
    """The transformers v5 ``rope_parameters`` dict (``rope_theta`` inside).

    ``ntk`` becomes ``default`` with the NTK base (exactly equivalent); ``ntk-by-parts`` becomes
    ``yarn`` with ``attention_factor`` 1.0. transformers has no ``ntk-mixed``, ``dynamic-yarn`` or
    log-n; use ``ropelab.hf.extend`` for those.
    """
    cfg = rope.config
    if cfg.log_n:
        raise _log_n_refusal("transformers' config", cfg.method)
    if cfg.unscaled_positions:
        raise _cannot(
            rope,
            "transformers' config",
            f"unscaled_positions={cfg.unscaled_positions} (LongRoPE's n_hat: plain RoPE below that position) "
            "has no field in any longrope config; apply it with ropelab.hf.extend, or export the factors "
            "alone (unscaled_positions=0)",
        )
    params: dict[str, Any] = {"rope_theta": cfg.base}
    method = cfg.method
    if method == "ntk":
        d = cfg.rotary_dim
        params = {"rope_type": "default", "rope_theta": cfg.base * cfg.scale ** (d / (d - 2))}
    elif method in ("ntk-mixed", "dynamic-yarn"):
        raise _cannot(rope, "transformers' config", "no such rope_type; apply it with ropelab.hf.extend")
    else:
        hf_type = "yarn" if method == "ntk-by-parts" else rope.method.hf_name
        assert hf_type is not None
        params["rope_type"] = hf_type
        if method != "default":
            params["factor"] = cfg.scale
        if method in ("yarn", "ntk-by-parts", "llama3", "longrope"):
            params["original_max_position_embeddings"] = cfg.trained_length
        if method == "ntk-by-parts":
            params["attention_factor"] = 1.0
        for key in (
            "attention_factor",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
            "low_freq_factor",
            "high_freq_factor",
        ):
            value = getattr(cfg, key)
            if value is not None:
                params[key] = value
        if method == "llama3":
            params.setdefault("low_freq_factor", 1.0)
            params.setdefault("high_freq_factor", 4.0)
        if method in ("yarn", "ntk-by-parts") and not cfg.truncate:
            params["truncate"] = False
        if method == "longrope":
            params["short_factor"] = list(cfg.short_factor or ())
            params["long_factor"] = list(cfg.long_factor or ())
    if cfg.partial_rotary_factor != 1.0:
        params["partial_rotary_factor"] = cfg.partial_rotary_factor
    return params


def hf_model_overrides(rope: Rope) -> dict[str, Any]:
    """The config keys to set on an HF model config: ``rope_parameters`` and the new length.

    The length is :attr:`Rope.max_length`: a stated ``max_position_embeddings`` wins; L0 * s only when
    nothing states it. Dynamic NTK is the exception: transformers measures the sequence length against
    ``max_position_embeddings`` (its L0), so the export sets it to the trained length (see :func:`hf_notes`).
    """
    out: dict[str, Any] = {"rope_parameters": to_hf(rope)}
    length = rope.config.trained_length if rope.config.method == "dynamic" else rope.max_length
    if length is not None:
        out["max_position_embeddings"] = length
    return out


def hf_notes(rope: Rope) -> list[str]:
    """One line per thing a user must know about :func:`hf_model_overrides` for this method."""
    if rope.config.method == "dynamic":
        return [
            f"max_position_embeddings is the trained length {rope.config.trained_length}, not a limit: "
            "transformers' dynamic NTK keeps the base up to it and grows the base with longer sequences"
        ]
    return []


def to_vllm(rope: Rope) -> dict[str, Any]:
    """vLLM arguments: ``hf_overrides`` (current vLLM) and the legacy ``--rope-scaling`` JSON.

    Semantics read from vLLM's ``model_executor/layers/rotary_embedding/`` (``__init__.py`` at 926c71f6,
    ``yarn_scaling_rope.py`` at ffdc9857, ``phi3_long_rope_scaled_rope.py`` at 63c2b7ab):

    - NTK-mixed maps to vLLM's ``ntk`` scaling with ``mixed_b`` (the same formula).
    - YaRN: vLLM's ``get_rope`` forwards ``attn_factor`` but not ``attention_factor``, and its plain YaRN
      ignores ``mscale`` / ``mscale_all_dim`` where DeepSeek's ``deepseek_yarn`` reads them: the attention
      factor travels as ``attn_factor`` for the path the config implies (see :func:`_vllm_yarn_attention`).
    - LongRoPE: the attention factor goes in ``short_mscale`` and ``long_mscale``. vLLM picks one factor
      set for the whole server: ``long_factor`` for every position when ``max_model_len`` > L0, else
      ``short_factor``; ropelab and transformers switch per sequence length. Where that differs, the
      result's ``differences`` says precisely how (it is empty for an exact export).
    """
    cfg = rope.config
    differences: list[str] = []
    if cfg.method == "ntk-mixed":
        c = cfg.mixed_exponent if cfg.mixed_exponent is not None else DEFAULT_MIXED_EXPONENT
        params: dict[str, Any] = {
            "rope_type": "ntk",
            "factor": cfg.scale,
            "mixed_b": c,
            "rope_theta": cfg.base,
        }
        if cfg.log_n:
            raise _log_n_refusal("vLLM", cfg.method)
    elif cfg.method in ("dynamic-yarn", "proportional"):
        raise _cannot(rope, "vLLM", "no such rope_type in vLLM")
    elif cfg.method == "dynamic":
        # vLLM DynamicNTKScalingRotaryEmbedding (rotary_embedding/dynamic_ntk_scaling_rope.py, read at
        # commit 50feac95): one cos/sin table for all positions, base b*(s^2 - s + 1)^(d/(d-2)) (older
        # vLLM) or a variant without the inner s; never the plain base below L0.
        raise _cannot(
            rope,
            "vLLM",
            "vLLM's 'dynamic' is a static table built once with the base for the full length, used for "
            "every position, while dynamic NTK keeps the plain base up to L0 and grows it with the sequence; "
            "no vLLM config equals it (use 'ntk' for a static base, or serve with transformers)",
        )
    else:
        try:
            params = to_hf(rope)
        except RopeConfigError as err:
            raise RopeConfigError(str(err).replace("transformers' config", "vLLM")) from None
    length = rope.max_length
    if params.get("rope_type") == "yarn":
        differences += _vllm_yarn_attention(rope, params)
    elif cfg.method == "longrope":
        trained = cfg.trained_length
        assert trained is not None
        attention = rope.frequencies()[1]
        params["short_mscale"] = params["long_mscale"] = attention
        served = length if length is not None else trained
        if served > trained and tuple(cfg.short_factor or ()) != tuple(cfg.long_factor or ()):
            differences.append(
                f"vLLM serving max_model_len {served} > original {trained} applies long_factor for every "
                f"position, so sequences of at most {trained} tokens get the long factors where ropelab and "
                f"transformers use short_factor; serve with --max-model-len {trained} for the short factors"
            )
    overrides: dict[str, Any] = {"rope_parameters": params}
    if length is not None:
        overrides["max_position_embeddings"] = length
    legacy = {k: v for k, v in params.items() if k != "rope_theta"}
    args = ["--hf-overrides", json.dumps(overrides)]
    legacy_args = ["--rope-scaling", json.dumps(legacy), "--rope-theta", repr(float(params["rope_theta"]))]
    if "max_position_embeddings" in overrides:
        args += ["--max-model-len", str(overrides["max_position_embeddings"])]
        legacy_args += ["--max-model-len", str(overrides["max_position_embeddings"])]
    return {
        "hf_overrides": overrides,
        "args": args,
        "command": "vllm serve MODEL " + shlex.join(args),
        "legacy_args": legacy_args,
        "legacy_command": "vllm serve MODEL " + shlex.join(legacy_args),
        "differences": differences,
    }


def _vllm_yarn_attention(rope: Rope, params: dict[str, Any]) -> list[str]:
    """Put YaRN's attention factor A where vLLM reads it (``params`` changed in place); what differs.

    vLLM (``rotary_embedding/__init__.py`` at 926c71f6, ``yarn_scaling_rope.py`` at ffdc9857,
    ``deepseek_scaling_rope.py`` at 7bc8d408) has two YaRN paths, chosen by the model class: plain YaRN
    applies g(s) * attn_factor and never reads ``attention_factor`` / ``mscale`` / ``mscale_all_dim``;
    DeepSeek's models switch to ``deepseek_yarn``, which applies g(s, mscale) / g(s, mscale_all_dim) *
    attn_factor (defaults 1 and 0), and also read ``mscale_all_dim`` for their softmax scale, so those keys
    stay. Without mscales the export targets plain YaRN, with them DeepSeek's path; the other path's value
    is stated when it differs.
    """
    cfg = rope.config
    scale, attention = cfg.scale, rope.frequencies()[1]
    deepseek = cfg.mscale is not None or cfg.mscale_all_dim is not None
    if deepseek:
        m = cfg.mscale if cfg.mscale is not None else 1.0
        m_all = cfg.mscale_all_dim if cfg.mscale_all_dim is not None else 0.0
        applied = yarn_mscale(scale, m) / yarn_mscale(scale, m_all)
    else:
        applied = yarn_mscale(scale)
    attn_factor = attention / applied
    if not math.isclose(attn_factor, 1.0, rel_tol=1e-15):
        params["attention_factor"] = attention  # for readers that use transformers' rope code
        params["attn_factor"] = attn_factor
    other = (yarn_mscale(scale) if deepseek else applied) * attn_factor
    if deepseek and not math.isclose(other, attention, rel_tol=1e-12):
        return [
            "YaRN attention factor: vLLM's plain YaRN (models other than DeepSeek's, e.g. Mistral 3) "
            f"ignores mscale/mscale_all_dim and applies {other:.6g} where ropelab and transformers apply "
            f"{attention:.6g}; DeepSeek models (deepseek_yarn) get {attention:.6g}"
        ]
    return []


#: a GGUF architecture name as llama.cpp writes it in metadata keys (``llama``, ``qwen2``, ``gemma3``)
_ARCH = re.compile(r"[a-z0-9_]+")


def to_llamacpp(rope: Rope, *, arch: str = "llama") -> dict[str, Any]:
    """llama.cpp flags (``llama-cli`` / ``llama-server``); ``arch`` is the GGUF's architecture name
    (``general.architecture``: ``llama`` for Llama and SmolLM2), used in metadata keys.

    YaRN's attention factor, read from llama.cpp 0c1e5709 (the commit llama-cpp-python 0.3.36 vendors;
    ``src/llama-context.cpp``, ``src/llama-model.cpp``, ``ggml/src/ggml-cpu/ops.cpp`` ``rope_yarn``):
    whenever YaRN is on, the context's ``yarn_attn_factor`` is *overwritten* (since PR #17945) with
    g(s) / (1 + 0.1 ln s), g(s) = 0.1 ln s + 1 (or DeepSeek's ratio when the GGUF has
    ``rope.scaling.yarn_log_multiplier``), so ``--yarn-attn-factor`` is lost; it is then multiplied by the
    GGUF hparam ``<arch>.rope.scaling.attn_factor`` (default 1), and ggml multiplies cos/sin by
    1 + 0.1 ln(1/freq_scale). The applied factor is therefore (0.1 ln s + 1) * attn_factor, and an explicit
    factor A is exported as ``--override-kv <arch>.rope.scaling.attn_factor=float:A/(0.1 ln s + 1)``
    (older llama.cpp multiplied the same hparam in, so the flag is right there too). The value assumes a
    GGUF without ``yarn_log_multiplier`` (every Llama-family GGUF).
    """
    if not _ARCH.fullmatch(arch):
        raise RopeConfigError(
            f"arch must be a GGUF architecture name such as 'llama' or 'qwen2' (general.architecture), "
            f"got {arch!r}"
        )
    cfg = rope.config
    method = cfg.method
    if cfg.log_n:
        raise _log_n_refusal("llama.cpp", method)
    flags: list[str]
    if method == "default":
        flags = ["--rope-scaling", "none", "--rope-freq-base", _num(cfg.base)]
    elif method == "linear":
        flags = [
            "--rope-scaling",
            "linear",
            "--rope-scale",
            _num(cfg.scale),
            "--rope-freq-base",
            _num(cfg.base),
        ]
    elif method == "ntk":
        d = cfg.rotary_dim
        flags = ["--rope-scaling", "none", "--rope-freq-base", _num(cfg.base * cfg.scale ** (d / (d - 2)))]
    elif method in ("yarn", "ntk-by-parts"):
        if not cfg.truncate:
            raise _cannot(
                rope, "llama.cpp", "its YaRN always truncates the correction range (truncate=false)"
            )
        scale = cfg.scale
        attention = rope.frequencies()[1]  # 1 for ntk-by-parts; explicit, DeepSeek or 0.1 ln s + 1 for yarn
        flags = [
            "--rope-scaling",
            "yarn",
            "--rope-scale",
            _num(scale),
            "--rope-freq-base",
            _num(cfg.base),
            "--yarn-orig-ctx",
            str(cfg.trained_length),
            "--yarn-beta-fast",
            _num(cfg.beta_fast or 32),
            "--yarn-beta-slow",
            _num(cfg.beta_slow or 1),
        ]
        default_attention = yarn_mscale(scale)
        if not math.isclose(attention, default_attention, rel_tol=1e-15):
            if arch.startswith("deepseek"):
                raise _cannot(
                    rope,
                    "llama.cpp",
                    f"a {arch} GGUF carries rope.scaling.yarn_log_multiplier, from which llama.cpp derives "
                    "DeepSeek's own attention factor (and a softmax scale); a flag on top would apply twice: "
                    "run the GGUF with its own metadata",
                )
            key = f"{arch}.rope.scaling.attn_factor"
            flags += ["--override-kv", f"{key}=float:{_num(attention / default_attention)}"]
    else:
        why = {
            "llama3": "llama.cpp reads Llama-3 scaling from the GGUF's rope_freqs tensor, not from flags",
            "longrope": "llama.cpp reads LongRoPE factors from the GGUF's rope factor tensors",
            "dynamic": "llama.cpp has no dynamic NTK",
            "dynamic-yarn": "llama.cpp has no dynamic YaRN",
            "ntk-mixed": "llama.cpp has no per-frequency NTK-mixed flag",
            "proportional": "llama.cpp has no proportional RoPE flag",
        }[method]
        raise _cannot(rope, "llama.cpp", why)
    if rope.max_length is not None:
        flags += ["--ctx-size", str(rope.max_length)]
    return {"flags": flags, "command": "llama-cli -m MODEL.gguf " + shlex.join(flags)}


def export_layers(ropes: Mapping[str, Rope], fmt: str, *, arch: str = "llama") -> dict[str, Any]:
    """Export a RoPE per layer type (from :func:`ropelab.rope.ropes_from_hf`): ``hf`` and ``vllm`` give
    ``rope_parameters`` nested by layer type (transformers v5; vLLM reads nested dicts for interleaved
    sliding-window models), with the longest of the layer types' lengths.

    ``llama.cpp`` applies its ``--rope-*`` flags to the full-attention layers only; sliding-window layers
    take ``rope.freq_base_swa`` / ``rope.scaling...swa`` from the GGUF (llama.cpp 0c1e5709,
    ``llama_model::get_rope_freq_base``), and the attention factor is global. So the flags of the
    ``full_attention`` layer type are exported when every other layer type is plain RoPE (what a converted
    GGUF holds) and the attention factor needs no override; anything else is refused.
    """
    if len(ropes) == 1:
        return export(next(iter(ropes.values())), fmt, arch=arch)
    if fmt == "hf":
        nested = {layer_type: hf_model_overrides(rope) for layer_type, rope in ropes.items()}
        out: dict[str, Any] = {"rope_parameters": {lt: o["rope_parameters"] for lt, o in nested.items()}}
        lengths = [o["max_position_embeddings"] for o in nested.values() if "max_position_embeddings" in o]
        if lengths:
            out["max_position_embeddings"] = max(lengths)
        return out
    if fmt == "vllm":
        parts = {layer_type: to_vllm(rope) for layer_type, rope in ropes.items()}
        overrides: dict[str, Any] = {
            "rope_parameters": {lt: p["hf_overrides"]["rope_parameters"] for lt, p in parts.items()}
        }
        lengths = [
            p["hf_overrides"]["max_position_embeddings"]
            for p in parts.values()
            if "max_position_embeddings" in p["hf_overrides"]
        ]
        args = ["--hf-overrides", json.dumps(overrides)]
        if lengths:
            overrides["max_position_embeddings"] = max(lengths)
            args = ["--hf-overrides", json.dumps(overrides), "--max-model-len", str(max(lengths))]
        return {
            "hf_overrides": overrides,
            "args": args,
            "command": "vllm serve MODEL " + shlex.join(args),
            "differences": [f"{lt}: {d}" for lt, p in parts.items() for d in p["differences"]],
        }
    if fmt in ("llama.cpp", "llamacpp", "gguf"):
        full = ropes.get(FULL_ATTENTION)
        others = [
            lt for lt, rope in ropes.items() if lt != FULL_ATTENTION and rope.config.method != "default"
        ]
        if full is None or others:
            raise RopeConfigError(
                "llama.cpp cannot express a RoPE per layer type beyond full_attention: its --rope-* flags "
                "set the full-attention layers and sliding-window layers keep the GGUF's plain RoPE "
                f"(layer types here: {', '.join(f'{lt}={r.config.method}' for lt, r in ropes.items())})"
            )
        out = to_llamacpp(full, arch=arch)
        if any(flag == "--override-kv" for flag in out["flags"]):
            raise RopeConfigError(
                "llama.cpp cannot express this attention factor per layer type: the "
                f"{arch}.rope.scaling.attn_factor override would scale the sliding-window layers too"
            )
        return out
    raise RopeConfigError(f"unknown export format {fmt!r}; choose from: {', '.join(FORMATS)}")


def _num(x: float) -> str:
    """A float as llama.cpp expects it: shortest round-trip text, no trailing .0 noise."""
    return repr(float(x)).removesuffix(".0") if float(x).is_integer() else repr(float(x))


def export(rope: Rope, fmt: str, *, arch: str = "llama") -> dict[str, Any]:
    """Dispatch by format name: ``hf``, ``vllm`` or ``llama.cpp`` (``arch``: the GGUF architecture)."""
    if fmt == "hf":
        return hf_model_overrides(rope)
    if fmt == "vllm":
        return to_vllm(rope)
    if fmt in ("llama.cpp", "llamacpp", "gguf"):
        return to_llamacpp(rope, arch=arch)
    raise RopeConfigError(f"unknown export format {fmt!r}; choose from: {', '.join(FORMATS)}")
