"""Apply a RoPE method to a loaded transformers causal LM: ``ropelab.hf.extend(model, "yarn", factor=4)``.

Two routes, chosen per method, neither of which copies model files or patches classes:

1. **transformers' own route** for the static methods it implements (``linear``, ``yarn``,
   ``ntk-by-parts`` as YaRN with attention factor 1, ``llama3``, ``proportional``, and ``ntk``
   as ``default`` with the NTK base): the model config's ``rope_parameters`` is replaced and the
   model's rotary module is rebuilt from it, so logits equal loading the model with that config.
2. **ropelab's attention route** for everything else (``ntk-mixed``, ``dynamic``, ``dynamic-yarn``,
   ``longrope``, log-n, ``rerope``, ``leaky-rerope``, ``self-extend``): the model's rotary module is
   replaced (on this model instance only) by one that returns the identity rotation, and an attention
   function registered in transformers' ``AttentionInterface`` under a name unique to this model
   rotates q and k itself. Keys are cached *before* rotation and all keys are rotated with the
   frequencies of the current total length, so KV-cached generation equals full recomputation even
   for the dynamic methods (where transformers' own dynamic NTK does not).

``extend`` always starts from the model as it was loaded: calling it again replaces the previous
method, and ``extend(model, "none")`` restores the original.

Models with a RoPE per layer type (transformers v5 nested ``rope_parameters``, e.g. Gemma 3's global
``full_attention`` and local ``sliding_attention`` layers, one rotary module with a table per layer type):
the method replaces the RoPE of the layer types ``layer_types=`` names, by default those of
:func:`ropelab.rope.extended_layer_types` (``full_attention``: sliding-window layers never see past their
window, and Gemma 3 itself scales only its global layers), on that layer type's geometry; the other layer
types keep theirs. transformers 5.24's Gemma 3 rotary module builds each table from
``config.rope_parameters[layer_type]``, so route 1 works per layer type; route 2 would rotate every layer
alike and is refused for such models.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

from ropelab.attention.registry import ATTENTION_METHODS  # noqa: F401  (re-exported by ropelab.hf)
from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.export import to_hf
from ropelab.hf.attention import register_attention
from ropelab.hf.extension import Extension
from ropelab.registry import REGISTRY, MethodSpec, canonical, parse_method
from ropelab.rope.core import Rope, extended_layer_types, is_per_layer
from ropelab.rope.frequencies import METHODS

#: methods whose frequencies transformers computes identically, and that do not change with the length
_NATIVE = {"default", "linear", "ntk", "ntk-by-parts", "yarn", "llama3", "proportional"}
_OPTIONS = {"window", "leak", "group", "layout", "layer_types"}
_counter = itertools.count()


# --------------------------------------------------------------------------- geometry
def model_geometry(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """head_dim, base, partial rotary factor and trained length of a transformers config.

    For a config with a RoPE per layer type (nested ``rope_parameters``), the geometry of ``layer_type``
    (default: the first of :func:`ropelab.rope.extended_layer_types`), with ``layer_types`` the config's
    RoPE layer types in order (``None`` for a flat config).
    """
    config = getattr(config, "text_config", None) or config
    rope_parameters = dict(getattr(config, "rope_parameters", None) or {})
    layer_types = None
    if is_per_layer(rope_parameters, getattr(config, "layer_types", None)):
        layer_types = [lt for lt, params in rope_parameters.items() if params is not None]
        layer_type = layer_type or extended_layer_types(layer_types)[0]
        if layer_type not in layer_types:
            raise RopeConfigError(
                f"layer type {layer_type!r}{did_you_mean(layer_type, layer_types)} has no RoPE here; "
                f"choose from: {', '.join(layer_types)}"
            )
        rope_parameters = dict(rope_parameters[layer_type])
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    partial = rope_parameters.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None))
    base = rope_parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    trained = (
        rope_parameters.get("original_max_position_embeddings")
        or getattr(config, "original_max_position_embeddings", None)  # Phi-3 keeps it outside
        or config.max_position_embeddings
    )
    return {
        "head_dim": int(head_dim),
        "base": float(base),
        "partial_rotary_factor": float(partial) if partial else 1.0,
        "trained_length": int(trained),
        "rope_parameters": rope_parameters,
        "layer_types": layer_types,
    }


def _method_and_params(method: str | MethodSpec, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The canonical name and the parameters of ``method``: a :class:`ropelab.MethodSpec`, a name or alias
    (``pi``), or a method's text (``yarn(factor=4)+log-n``), read by :mod:`ropelab.registry`.
    ``params`` are set after those of the spec or text."""
    if isinstance(method, str) and not any(ch in method for ch in "(+*"):
        name, merged = canonical(method), dict(params)
    else:
        spec = parse_method(method) if isinstance(method, str) else method
        if spec.multiplier != 1.0:
            raise RopeConfigError(
                f"{spec.label!r}: '*A' is the lab's factor policy; give a model an explicit factor=..."
            )
        name, merged = spec.method, {**spec.params, **params}
        if spec.log_n:
            merged["log_n"] = True
    if REGISTRY[name].kind == "encoding":
        raise RopeConfigError(
            f"{name!r} is an encoding the lab trains models with, not a method for a loaded model; "
            f"choose one of: {', '.join(n for n, e in REGISTRY.items() if e.kind != 'encoding')}"
        )
    return name, merged


def make_extension(config: Any, method: str | MethodSpec, **params: Any) -> Extension:
    """Resolve ``method`` and its parameters against a model config (no model needed).

    ``method``: a :class:`ropelab.MethodSpec` or any text :func:`ropelab.parse_method` reads (a canonical
    name, an alias such as ``pi``, ``yarn(factor=4)+log-n``); keyword ``params`` are set after the spec's.
    The defaults that depend on the model (ReRoPE's and Self-Extend's window from its trained length) are
    filled in here; :meth:`Extension.resolved` lists every parameter the method runs with.
    """
    method, params = _method_and_params(method, params)
    options = {k: params.pop(k) for k in list(params) if k in _OPTIONS}
    chosen = options.pop("layer_types", None)
    if isinstance(chosen, str):
        chosen = (chosen,)
    geo = model_geometry(config)
    layer_types: tuple[str, ...] | None = None
    if geo["layer_types"] is not None:
        layer_types = tuple(extended_layer_types(geo["layer_types"]) if chosen is None else chosen)
        for name in layer_types:
            model_geometry(config, name)  # "did you mean" for a layer type the config lacks
        geo = model_geometry(config, layer_types[0])
        for name in layer_types[1:]:
            other = model_geometry(config, name)
            if (other["head_dim"], other["base"], other["partial_rotary_factor"]) != (
                geo["head_dim"],
                geo["base"],
                geo["partial_rotary_factor"],
            ):
                raise RopeConfigError(
                    f"layer types {layer_types[0]!r} and {name!r} have different RoPE geometry (base "
                    f"{geo['base']:g} vs {other['base']:g}): one method needs one geometry; choose layer "
                    "types that share it"
                )
    elif chosen is not None:
        raise RopeConfigError(
            "layer_types is only for models with a RoPE per layer type (nested rope_parameters)"
        )
    attention = "rope"
    rope_method = REGISTRY[method].impl
    if REGISTRY[method].kind == "attention":
        attention, rope_method = method, REGISTRY[canonical(params.pop("rope_method", "none"))].impl
    assert rope_method is not None  # every frequency method names its function in ropelab.rope.METHODS
    rope_kwargs: dict[str, Any] = {
        "head_dim": geo["head_dim"],
        "base": geo["base"],
        "partial_rotary_factor": geo["partial_rotary_factor"],
    }
    info = METHODS[rope_method]
    if info.needs_trained_length or params.get("log_n"):
        rope_kwargs["original_max_position_embeddings"] = geo["trained_length"]
    rope_kwargs.update(params)
    if rope_method == "default" and rope_kwargs.get("factor") is not None and attention != "rope":
        raise RopeConfigError(f"{method} does not take --factor (it keeps the model's frequencies)")
    rope = Rope(rope_method, **rope_kwargs)
    window, leak, group = options.get("window"), options.get("leak"), options.get("group")
    if attention == "rerope" or attention == "leaky-rerope":
        window = int(window if window is not None else max(1, geo["trained_length"] // 4))
        if attention == "leaky-rerope":
            leak = float(leak if leak is not None else 16.0)
            if leak <= 1:
                raise RopeConfigError(f"leaky-rerope needs leak k > 1, got {leak}")
    elif attention == "self-extend":
        group = int(group if group is not None else 4)
        window = int(window if window is not None else max(1, geo["trained_length"] // 4))
        if group < 1:
            raise RopeConfigError(f"self-extend needs group >= 1, got {group}")
    else:
        for key, value in options.items():
            if value is not None:
                raise RopeConfigError(f"method {method!r} does not take {key!r}")
    if window is not None and window < 1:
        raise RopeConfigError(f"window must be >= 1, got {window}")
    native = attention == "rope" and rope_method in _NATIVE and not rope.config.log_n
    if layer_types is not None and not native:
        raise RopeConfigError(
            f"method {method!r} needs ropelab's own attention, which would rotate every layer type alike; on "
            f"a model with a RoPE per layer type ({', '.join(geo['layer_types'])}) use one transformers "
            f"builds per layer type: {', '.join(sorted(_NATIVE - {'default'}))}"
        )
    return Extension(method, rope, attention, window, leak, group, native, layer_types)


# ------------------------------------------------------------------------------ apply
def _rotary_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every transformers rotary embedding in ``model``."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            tables = [n for n, _ in child.named_buffers(recurse=False) if n.endswith("inv_freq")]
            if hasattr(child, "rope_type") and tables:  # Gemma 3: one `{layer_type}_inv_freq` per type
                found.append((parent, name, child))
    if not found:
        raise RopeConfigError(f"{type(model).__name__} has no rotary embedding module: is it a RoPE model?")
    return found


def _table(rotary: nn.Module) -> torch.Tensor:
    """A rotary module's inverse frequencies (the first table of a per-layer-type module)."""
    return next(buf for n, buf in rotary.named_buffers(recurse=False) if n.endswith("inv_freq"))


class IdentityRotary(nn.Module):
    """Stands in for a model's rotary module: cos = 1, sin = 0, so the modeling code rotates nothing.

    ``rotary_dim`` channels, in the dtype of the hidden states: ``[b, s, rotary_dim]`` each.
    """

    def __init__(self, rotary_dim: int) -> None:
        super().__init__()
        self.rotary_dim = rotary_dim

    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, *_: Any, **__: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*position_ids.shape, self.rotary_dim)
        return (
            torch.ones(shape, dtype=x.dtype, device=x.device),
            torch.zeros(shape, dtype=x.dtype, device=x.device),
        )


def _original(model: nn.Module) -> dict[str, Any]:
    """What the model looked like before the first ``extend`` (saved once, on the instance)."""
    state = model.__dict__.get("_ropelab_original")
    if state is None:
        state = {
            "rope_parameters": copy.deepcopy(getattr(model.config, "rope_parameters", None)),
            "max_position_embeddings": model.config.max_position_embeddings,
            "attn_implementation": model.config._attn_implementation,
            "rotary": [(parent, name, child) for parent, name, child in _rotary_modules(model)],
        }
        model.__dict__["_ropelab_original"] = state
    return state


def restore(model: nn.Module) -> nn.Module:
    """Undo ``extend``: the model's own rotary modules, config and attention implementation."""
    state = model.__dict__.get("_ropelab_original")
    if state is None:
        return model
    for parent, name, child in state["rotary"]:
        setattr(parent, name, child)
    model.config.rope_parameters = copy.deepcopy(state["rope_parameters"])
    model.config.max_position_embeddings = state["max_position_embeddings"]
    if model.config._attn_implementation != state["attn_implementation"]:
        model.set_attn_implementation(state["attn_implementation"])
    model.__dict__.pop("ropelab_extension", None)
    if hasattr(model.config, "ropelab"):
        del model.config.ropelab
    return model


def extend(model: nn.Module, method: str | MethodSpec | Extension, **params: Any) -> nn.Module:
    """Apply ``method`` (with ``factor=`` and the other RoPE parameters, or ``window``/``leak``/
    ``group`` for the attention-level methods) to ``model`` in place and return it.

    ``method``: what :func:`make_extension` takes, or an :class:`Extension` it already made for this
    model's config (so a sweep resolves each method once). The model's geometry (head_dim, rope_theta,
    partial rotary factor, trained length) comes from its config. ``extend(model, "none")`` restores the
    original (for a model that ``ropelab finetune`` saved with a method transformers lacks, the original
    *is* that method, re-applied by :func:`ropelab.hf.load.load_model`). See the module docstring for the
    routes.
    """
    ext: Extension | None = None
    if isinstance(method, Extension):
        if params:
            raise RopeConfigError("extend(model, extension) takes no parameters: they are in the extension")
        ext, plain = method, method.name == "none" and method.native
    else:
        name, params = _method_and_params(method, params)
        plain = name == "none" and not params
    state = _original(model)
    restore(model)
    if plain:
        saved = model.__dict__.get("ropelab_saved_method")  # a fine-tuned model's own method
        return extend(model, saved[0], **saved[1]) if saved else model
    if ext is None:
        ext = make_extension(model.config, name, **params)
    if ext.native:
        _apply_native(model, ext, state)
    else:
        _apply_attention(model, ext, state)
    model.__dict__["ropelab_extension"] = ext
    model.config.ropelab = ext.describe()
    return model


def _new_length(ext: Extension, trained: int) -> int:
    return round(trained * ext.rope.config.scale)


def _apply_native(model: nn.Module, ext: Extension, state: dict[str, Any]) -> None:
    params = to_hf(ext.rope)
    layer_types = ext.layer_types or (None,)
    trained = model_geometry(model.config, layer_types[0])["trained_length"]
    if params["rope_type"] in ("yarn", "llama3", "longrope"):
        params.setdefault("original_max_position_embeddings", trained)
    if ext.layer_types is None:
        model.config.rope_parameters = params
    else:  # replace the chosen layer types' entries, keep the others as loaded
        nested = copy.deepcopy(state["rope_parameters"])
        for layer_type in ext.layer_types:
            nested[layer_type] = copy.deepcopy(params)
        model.config.rope_parameters = nested
    model.config.max_position_embeddings = max(_new_length(ext, trained), state["max_position_embeddings"])
    for parent, name, child in state["rotary"]:
        device = next(child.buffers()).device
        setattr(parent, name, type(child)(config=model.config).to(device))


def _apply_attention(model: nn.Module, ext: Extension, state: dict[str, Any]) -> None:
    try:  # keep the config loadable by transformers where it can express the method
        params = to_hf(ext.rope) if ext.attention == "rope" else None
    except RopeConfigError:
        params = None
    if params is not None:
        model.config.rope_parameters = params
    for parent, name, child in state["rotary"]:
        setattr(parent, name, IdentityRotary(2 * _table(child).numel()))
    name = f"ropelab_{next(_counter)}"
    register_attention(name, ext)
    model.set_attn_implementation(name)
