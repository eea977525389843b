"""From a model's ``config.json`` to the RoPE each of its layer types uses, as transformers 5 reads it.

A published ``config.json`` spreads RoPE over several keys and conventions: the legacy ``rope_scaling``
dict (``type`` or ``rope_type``), a top-level ``rope_theta`` (GPT-NeoX: ``rotary_emb_base``), a partial
rotary fraction (``partial_rotary_factor``; GPT-NeoX: ``rotary_pct``), Phi-3's top-level
``original_max_position_embeddings``, Gemma 3's second base for its local layers, and DeepSeek's MLA,
where only ``qk_rope_head_dim`` channels of a head rotate. :func:`hf_rope_parameters` turns all of these
into the transformers-5 ``rope_parameters`` form, one flat dict per layer type, which
:meth:`ropelab.Rope.from_hf` reads.

Semantics read from transformers 5.24.0 (``modeling_rope_utils.RotaryEmbeddingConfigMixin``:
``convert_rope_params_to_dict`` and ``standardize_rope_params``; ``models/gemma3/configuration_gemma3.py``
``Gemma3TextConfig.convert_rope_params_to_dict`` and ``__post_init__``; ``models/phi3/configuration_phi3.py``;
``models/gpt_neox/configuration_gpt_neox.py``; ``models/deepseek_v3/configuration_deepseek_v3.py``):

* single RoPE: ``rope_parameters = rope_scaling or rope_parameters or {}``; ``rope_type`` defaults to
  the dict's ``type``, then ``"default"``; ``rope_theta`` defaults to the top-level ``rope_theta``, then
  10000; ``partial_rotary_factor`` is copied in from the top level when the config has one.
* ``llama3``, ``yarn``, ``longrope``: ``original_max_position_embeddings`` is the config's top-level
  value when it has one (Phi-3), else the dict's own, else ``max_position_embeddings``.
* Phi-3: a legacy ``type`` of ``"su"`` or ``"yarn"`` is read as ``"longrope"``.
* GPT-NeoX: the base is ``rotary_emb_base`` (default 10000) and the fraction ``rotary_pct`` (default 0.25).
* Gemma 3 (legacy keys): two layer types. ``full_attention`` = ``{"rope_type": "default"}`` updated with
  ``rope_scaling`` (when not null), ``rope_theta`` defaulting to 1e6; ``sliding_attention`` =
  ``{"rope_type": "default", "rope_theta": rope_local_base_freq}`` (default 1e4). Layer ``i`` (0-based)
  is ``full_attention`` when ``(i + 1) % sliding_window_pattern == 0`` (pattern default 6), else
  ``sliding_attention``. A config that already has nested ``rope_parameters`` is taken as it is.
* DeepSeek-V2/V3 (MLA): the rotary head dim is ``qk_rope_head_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.rope.core import ALL_LAYERS, Rope

#: transformers' ``RotaryEmbeddingConfigMixin.default_theta`` (5.24.0).
DEFAULT_THETA = 10000.0
#: Gemma 3's defaults (``Gemma3TextConfig.default_theta``, ``sliding_window_pattern``), transformers 5.24.0.
GEMMA3_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}
GEMMA3_PATTERN = 6
#: RoPE types whose trained length transformers fills from ``max_position_embeddings`` when absent.
_NEEDS_L0 = ("llama3", "yarn", "longrope")
_GEMMA3 = ("gemma3", "gemma3_text")


@dataclass(frozen=True)
class Geometry:
    """Head geometry a RoPE needs: rotary head dim and the advertised maximum length."""

    head_dim: int
    max_position_embeddings: int | None


def geometry(config: Mapping[str, Any]) -> Geometry:
    """``head_dim`` as transformers reads it: ``qk_rope_head_dim`` (MLA), ``head_dim``, or hidden / heads."""
    head_dim = config.get("qk_rope_head_dim") or config.get("head_dim")
    if not head_dim:
        try:
            head_dim = int(config["hidden_size"]) // int(config["num_attention_heads"])
        except KeyError:
            raise RopeConfigError(
                "config has neither head_dim nor hidden_size and num_attention_heads; add head_dim"
            ) from None
    max_pos = config.get("max_position_embeddings")
    return Geometry(head_dim=int(head_dim), max_position_embeddings=int(max_pos) if max_pos else None)


def layer_types(config: Mapping[str, Any]) -> list[str]:
    """The layer type of every layer (``[]`` when the config does not say how many layers there are)."""
    if config.get("layer_types"):
        return list(config["layer_types"])
    if config.get("model_type") in _GEMMA3 and config.get("num_hidden_layers"):
        pattern = int(config.get("sliding_window_pattern", GEMMA3_PATTERN))
        return [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(int(config["num_hidden_layers"]))
        ]
    return []


def hf_rope_parameters(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per layer type, the transformers-5 ``rope_parameters`` dict a ``config.json`` stands for.

    Returns ``{"all": {...}}`` for a model with one RoPE, ``{"full_attention": {...}, "sliding_attention":
    {...}}`` for Gemma 3 and any config whose ``rope_parameters`` is nested by layer type.
    """
    nested = config.get("rope_parameters")
    if isinstance(nested, Mapping) and nested and all(isinstance(v, Mapping) for v in nested.values()):
        return {k: _standardize(config, dict(v)) for k, v in nested.items()}
    if config.get("model_type") in _GEMMA3:
        full = {"rope_type": "default"}
        if config.get("rope_scaling"):
            full.update(config["rope_scaling"])
        full.setdefault("rope_theta", config.get("rope_theta", GEMMA3_THETA["full_attention"]))
        local = {
            "rope_type": "default",
            "rope_theta": config.get("rope_local_base_freq", GEMMA3_THETA["sliding_attention"]),
        }
        return {
            "full_attention": _standardize(config, full),
            "sliding_attention": _standardize(config, local),
        }
    params = dict(config.get("rope_scaling") or nested or {})
    return {ALL_LAYERS: _standardize(config, params)}


def _standardize(config: Mapping[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """One flat dict in transformers-5 form: ``rope_type`` (no legacy ``type``), theta, partial, L0."""
    legacy = params.pop("type", None)
    if legacy is not None and params.get("rope_type") not in (None, legacy):
        raise RopeConfigError(f"rope parameters have rope_type={params['rope_type']!r} and type={legacy!r}")
    params.setdefault("rope_type", legacy or "default")
    if config.get("model_type") == "phi3" and params["rope_type"] in ("su", "yarn"):
        params["rope_type"] = "longrope"
    if config.get("model_type") == "gpt_neox":
        params.setdefault("rope_theta", config.get("rotary_emb_base", DEFAULT_THETA))
        params.setdefault("partial_rotary_factor", config.get("rotary_pct", 0.25))
    params.setdefault("rope_theta", config.get("rope_theta", DEFAULT_THETA))
    if config.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", config["partial_rotary_factor"])
    if params["rope_type"] in _NEEDS_L0:
        if config.get("original_max_position_embeddings") is not None:
            params["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        elif config.get("max_position_embeddings") is not None:
            params.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    return params


def ropes(config: Mapping[str, Any]) -> dict[str, Rope]:
    """Per layer type, the :class:`ropelab.Rope` a ``config.json`` describes (:func:`hf_rope_parameters`)."""
    geo = geometry(config)
    max_pos = geo.max_position_embeddings
    return {
        layer_type: Rope.from_hf(params, head_dim=geo.head_dim, max_position_embeddings=max_pos)
        for layer_type, params in hf_rope_parameters(config).items()
    }


# ----------------------------------------------- the parsed summary commands and presets read
def parse_hf_config(cfg: Any, *, where: str = "config") -> dict[str, Any]:
    """Geometry and RoPE parameters of a transformers config dict (pure: no file access).

    Returns ``head_dim``, ``rope_parameters`` (flat, or nested by layer type as transformers v5 writes
    it), ``rope_theta`` and ``partial_rotary_factor`` (config-level defaults), ``max_position_embeddings``
    and ``layer_types``. Follows transformers 5.24: a multimodal config's ``text_config``; ``rope_scaling``
    as the legacy name of ``rope_parameters``; ``head_dim`` else ``hidden_size / num_attention_heads``, but
    DeepSeek's rotary dim ``qk_rope_head_dim``; Phi-3's ``original_max_position_embeddings`` outside the
    dict wins; Gemma 3's legacy ``rope_local_base_freq`` makes a nested dict (scaling on
    ``full_attention``, plain RoPE with that base on ``sliding_attention``, as ``Gemma3TextConfig`` does).
    """
    if not isinstance(cfg, dict):
        raise RopeConfigError(f"{where} must hold a JSON object")
    cfg = cfg.get("text_config", cfg) if "rope_theta" not in cfg and "rope_parameters" not in cfg else cfg
    check_hf_config_values(cfg, where)
    raw = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(raw, dict):
        raise RopeConfigError(f"{where}: rope_parameters must be a JSON object, got {raw!r}")
    try:  # the library's one reading of config.json (ropelab.rope.hf_config)
        geo = geometry(cfg)
        per_layer = hf_rope_parameters(cfg)
    except RopeConfigError as err:
        raise RopeConfigError(f"{where}: {err}") from None
    rope_theta = cfg.get("rope_theta")
    partial = cfg.get("partial_rotary_factor", cfg.get("rotary_pct"))
    if list(per_layer) == [ALL_LAYERS]:
        rope_parameters = per_layer[ALL_LAYERS]
        rope_theta = rope_parameters.pop("rope_theta", None) or rope_theta
        partial = rope_parameters.pop("partial_rotary_factor", None) or partial
    else:
        rope_parameters = per_layer
    types = layer_types(cfg)
    return {
        "head_dim": geo.head_dim,
        "rope_parameters": rope_parameters,
        "rope_theta": rope_theta or 10000.0,
        "partial_rotary_factor": partial,
        "max_position_embeddings": geo.max_position_embeddings,
        "layer_types": types or None,
    }


def check_hf_config_values(cfg: dict[str, Any], where: str) -> None:
    """The geometry and RoPE entries a config is read for have the JSON types transformers expects."""

    def bad(key: str, want: str) -> RopeConfigError:
        return RopeConfigError(f"{where}: {key} must be {want}, got {cfg[key]!r}")

    for key in (
        "head_dim",
        "qk_rope_head_dim",
        "hidden_size",
        "num_attention_heads",
        "max_position_embeddings",
    ):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(key, "a positive integer")
    for key in ("rope_theta", "partial_rotary_factor", "rotary_pct"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(key, "a number")
    for key in ("rope_parameters", "rope_scaling"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, dict):
            raise bad(key, "a JSON object of RoPE parameters")
