"""RoPE: the methods' frequencies, the `Rope` object, the rotation itself and the per-pair view."""

from ropelab.rope.apply import apply_rotary, apply_rotary_, rotate
from ropelab.rope.config import RopeConfig
from ropelab.rope.core import (
    ALL_LAYERS,
    FULL_ATTENTION,
    Rope,
    extended_layer_types,
    is_per_layer,
    ropes_from_hf,
)
from ropelab.rope.frequencies import METHODS, Method, base_inv_freq, get_method
from ropelab.rope.hf_config import check_hf_config_values, parse_hf_config
from ropelab.rope.inspect import PairView, pair_views, summarize

__all__ = [
    "ALL_LAYERS",
    "FULL_ATTENTION",
    "METHODS",
    "Method",
    "PairView",
    "Rope",
    "RopeConfig",
    "apply_rotary",
    "apply_rotary_",
    "base_inv_freq",
    "check_hf_config_values",
    "extended_layer_types",
    "get_method",
    "is_per_layer",
    "pair_views",
    "parse_hf_config",
    "ropes_from_hf",
    "rotate",
    "summarize",
]
