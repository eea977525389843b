"""transformers: the installed library itself computes the frequencies (no re-implementation here).

The config dict becomes the config class transformers would load for its ``model_type``
(``CONFIG_MAPPING``; ``LlamaConfig`` when the type is unknown), and the frequencies come from
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len=L)``
(for ``default``, the ``linear`` function with factor 1, bit-identical to
``compute_default_rope_parameters``). That is what the rotary
embedding runs: ``dynamic_rope_update`` calls the same function with ``seq_len = max(position_ids)+1``
for dynamic NTK (once the sequence outgrows the cached length) and picks the long LongRoPE table
when ``seq_len > original_max_position_embeddings``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from ropelab.stacks.config import ModelRope, StackEval, StackPlan

STACK = "transformers"

_RULES = {
    "dynamic": "per forward pass: base for L > max_position_embeddings (its L0), plain base up to it",
    "longrope": "per forward pass: short factors for L <= original, long factors beyond",
}


def _config_class(model_type: str | None) -> Any:
    from transformers import CONFIG_MAPPING, LlamaConfig

    if model_type and model_type in CONFIG_MAPPING:
        return CONFIG_MAPPING[model_type]
    return LlamaConfig


def build_config(model: ModelRope) -> Any:
    """The transformers config object for ``model`` (its own config class, else ``LlamaConfig``)."""
    cls = _config_class(model.model_type)
    text = copy.deepcopy(dict(model.text))
    text.pop("model_type", None)
    text.pop("text_config", None)
    if cls.__name__ == "LlamaConfig" and "qk_rope_head_dim" in text:
        # an MLA config under a model_type transformers does not know (DeepSeek-V2's first config.json
        # says "deepseek"): LlamaConfig would rotate hidden_size / heads channels, not the rotary ones
        text["head_dim"] = model.head_dim
    log = logging.getLogger("transformers")  # its validation warnings are not this report's business
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return cls(**text)
    finally:
        log.setLevel(level)


def _layer_type(config: Any) -> str | None:
    """``full_attention`` (else the first) when transformers nested rope_parameters by layer type
    (Gemma 3 builds {full_attention, sliding_attention} from rope_scaling and rope_local_base_freq)."""
    nested = config.nested_rope_parameter_keys(config.rope_parameters or {})
    if not nested:
        return None
    return "full_attention" if "full_attention" in nested else nested[0]


def plan(model: ModelRope, lengths: Sequence[int]) -> StackPlan:
    """What the installed transformers computes for ``model`` at each of ``lengths``."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    source = f"transformers {transformers.__version__} (installed)"
    rope_type = model.rope_type
    default = rope_type == "default"
    if default:
        # transformers' default table is its linear one with factor 1 (``inv_freq /= 1.0`` changes no bit);
        # importing a modeling file for compute_default_rope_parameters would cost seconds (torch.distributed)
        fn = ROPE_INIT_FUNCTIONS["linear"]
    elif rope_type in ROPE_INIT_FUNCTIONS:
        fn = ROPE_INIT_FUNCTIONS[rope_type]
    else:
        return StackPlan(
            STACK,
            source,
            cannot=f"transformers has no rope_type {rope_type!r} (ROPE_INIT_FUNCTIONS: "
            f"{', '.join(ROPE_INIT_FUNCTIONS)}); loading the model raises KeyError",
        )
    detail: dict[str, Any] = {}
    try:
        config = build_config(model)
        layer = _layer_type(config)
        kwargs = {} if layer is None else {"layer_type": layer}
        if layer is not None:
            detail["layer_type"] = (
                f"{layer} (rope_parameters nested by layer type; the others are not compared)"
            )
        if default:
            params = config.rope_parameters if layer is None else config.rope_parameters[layer]
            params.update(rope_type="linear", factor=1.0)
        evals = []
        for length in lengths:
            inv_freq, attention = fn(config, None, seq_len=length, **kwargs)
            evals.append(StackEval(int(length), inv_freq.double(), float(attention)))
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        return StackPlan(
            STACK, source, cannot=f"transformers rejects this config: {type(err).__name__} {err}"
        )
    max_length = getattr(config.get_text_config(), "max_position_embeddings", None)
    return StackPlan(
        STACK,
        source,
        evals=tuple(evals),
        max_length=int(max_length) if max_length else None,
        rule=_RULES.get(rope_type, "one static table"),
        detail={"config_class": type(config).__name__, **detail},
    )
