"""RoPE: the methods' frequencies, the `Rope` object and the rotation itself."""

from ropelab.rope.apply import apply_rotary, apply_rotary_, rotate
from ropelab.rope.config import RopeConfig
from ropelab.rope.core import Rope
from ropelab.rope.frequencies import METHODS, Method, base_inv_freq, get_method

__all__ = [
    "METHODS",
    "Method",
    "Rope",
    "RopeConfig",
    "apply_rotary",
    "apply_rotary_",
    "base_inv_freq",
    "get_method",
    "rotate",
]
