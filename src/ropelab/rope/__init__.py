"""RoPE: the methods' frequencies, the `Rope` object and the rotation itself."""

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

__all__ = [
    "ALL_LAYERS",
    "FULL_ATTENTION",
    "METHODS",
    "Method",
    "Rope",
    "RopeConfig",
    "apply_rotary",
    "apply_rotary_",
    "base_inv_freq",
    "check_hf_config_values",
    "extended_layer_types",
    "get_method",
    "is_per_layer",
    "parse_hf_config",
    "ropes_from_hf",
    "rotate",
]
