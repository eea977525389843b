"""One transformers ``config.json`` dict, read the way transformers reads it, and what a stack makes of it.

:func:`read_config` takes the dict (``text_config`` nesting, ``rope_parameters`` or legacy
``rope_scaling``, ``type`` or ``rope_type``, ``rope_theta`` / ``partial_rotary_factor`` at top level,
Phi-3's ``original_max_position_embeddings`` at top level) and returns a :class:`ModelRope` whose
``rope_parameters`` are standardised as ``transformers.PreTrainedConfig.standardize_rope_params``
does in transformers 5.24: ``rope_scaling`` wins over ``rope_parameters``; ``rope_theta`` and
``partial_rotary_factor`` move inside; for llama3 / yarn / longrope a top-level
``original_max_position_embeddings`` overrides the one inside, else it defaults to
``max_position_embeddings``. vLLM loads configs through transformers, so it sees the same dict; the
llama.cpp converter reads ``config.json`` itself (see :mod:`ropelab.stacks.llamacpp`).

Each stack module returns a :class:`StackPlan`: the inverse frequencies (float64 ``[d/2]``) and
attention factor it uses at each evaluated sequence length, its maximum length, and its switching
rule, or the reason it cannot load the config at all.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.rope.core import FULL_ATTENTION
from ropelab.rope.frequencies import base_inv_freq
from ropelab.rope.hf_config import geometry, hf_rope_parameters


@dataclass(frozen=True)
class ModelRope:
    """The RoPE-relevant part of one model config, standardised as transformers does.

    Attributes:
        name: a label for reports (file name or preset name).
        text: the (text) config dict itself, a private deep copy.
        rope_parameters: standardised flat dict with ``rope_type`` and ``rope_theta`` inside.
        head_dim: channels per attention head.
        max_position_embeddings: the length the config advertises (``None`` if absent).
        model_type: ``model_type`` of the text config (or of the outer config).
        architectures: ``architectures`` of the outer config.
    """

    name: str
    text: Mapping[str, Any] = field(repr=False)
    rope_parameters: Mapping[str, Any]
    head_dim: int
    max_position_embeddings: int | None
    model_type: str | None
    architectures: tuple[str, ...]

    @property
    def rope_type(self) -> str:
        return str(self.rope_parameters["rope_type"])

    @property
    def base(self) -> float:
        return float(self.rope_parameters["rope_theta"])

    @property
    def partial_rotary_factor(self) -> float:
        return float(self.rope_parameters.get("partial_rotary_factor") or 1.0)

    @property
    def rotary_dim(self) -> int:
        """int(head_dim * partial_rotary_factor), as every stack computes it."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def original(self) -> int | None:
        """``original_max_position_embeddings`` as standardised (inside the rope parameters)."""
        value = self.rope_parameters.get("original_max_position_embeddings")
        return int(value) if value is not None else None

    def param(self, key: str, default: Any = None) -> Any:
        value = self.rope_parameters.get(key)
        return default if value is None else value


@dataclass(frozen=True)
class StackEval:
    """What a stack computes at one sequence length: inverse frequencies float64 ``[d/2]`` and the
    factor multiplied into cos and sin."""

    seq_len: int
    inv_freq: torch.Tensor
    attention_factor: float


@dataclass(frozen=True)
class StackPlan:
    """One stack's reading of a config.

    Attributes:
        stack: ``transformers``, ``vLLM`` or ``llama.cpp``.
        source: the version (or commit) whose semantics this module encodes.
        evals: one :class:`StackEval` per requested length (empty when ``cannot`` is set).
        max_length: the longest sequence the stack will serve with this config.
        rule: how the stack switches between tables (one line).
        cannot: why the stack cannot load / express the config, else ``None``.
        why: the known reasons this stack departs from the config's transformers meaning
            (used to explain a numeric difference; ignored when the numbers agree).
        detail: what the stack was given (e.g. the GGUF metadata the converter writes).
    """

    stack: str
    source: str
    evals: tuple[StackEval, ...] = ()
    max_length: int | None = None
    rule: str = ""
    cannot: str | None = None
    why: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


def read_config(config: Mapping[str, Any], *, name: str = "config") -> ModelRope:
    """Standardise one transformers config dict (see the module doc). Raises :class:`RopeConfigError`."""
    if not isinstance(config, Mapping):
        raise RopeConfigError(f"{name}: a model config must be a JSON object, got {type(config).__name__}")
    outer = dict(config)
    text = outer.get("text_config")
    text = copy.deepcopy(dict(text)) if isinstance(text, Mapping) else copy.deepcopy(outer)
    # one reading of config.json for the whole library (ropelab.rope.hf_config): MLA's qk_rope_head_dim,
    # legacy rope_scaling / type, Phi-3's top-level L0 and "su", GPT-NeoX's rotary_emb_base / rotary_pct
    try:
        geo = geometry(text)
        per_layer = hf_rope_parameters(text)
    except RopeConfigError as err:
        raise RopeConfigError(f"{name}: {err}") from None
    if len(per_layer) > 1:
        # Gemma 3: the layer type that carries the scaling (transformers' full_attention); the other
        # layer types keep plain RoPE and are not what a stack's rope_scaling handling is about
        layer = FULL_ATTENTION if FULL_ATTENTION in per_layer else next(iter(per_layer))
        params = copy.deepcopy(per_layer[layer])
    else:
        params = copy.deepcopy(next(iter(per_layer.values())))
    if params.get("rope_theta") is None:
        params["rope_theta"] = 10000.0
    head_dim, max_pos = geo.head_dim, geo.max_position_embeddings
    archs = outer.get("architectures") or text.get("architectures") or ()
    return ModelRope(
        name=name,
        text=text,
        rope_parameters=params,
        head_dim=int(head_dim),
        max_position_embeddings=int(max_pos) if max_pos is not None else None,
        model_type=text.get("model_type") or outer.get("model_type"),
        architectures=tuple(str(a) for a in archs),
    )


def base_inv_freq64(base: float, dim: int) -> torch.Tensor:
    """theta_i = base^(-2i/dim) in float32 arithmetic (as every Python stack), returned as float64."""
    return base_inv_freq(base, dim).double()
