"""ropelab: positional encodings and context-window extension for transformer language models.

Public surface (see README):

    ropelab.METHODS                    # name -> Method (function, one-line doc, paper)
    ropelab.Rope(...)                  # a configured RoPE method
    ropelab.Rope.from_hf(...)          # from transformers rope_parameters / rope_scaling
    ropelab.apply_rotary(q, k, cos, sin, layout="half")
    ropelab.alibi_slopes(n_heads)      # float32 [n_heads], exact for any head count
    ropelab.make_encoding(name, ...)   # sinusoidal, learned, nope, rope, xpos, alibi
    ropelab.RopeConfigError            # the one error type for bad configuration or input
"""

from ropelab.attention import alibi_slopes
from ropelab.encodings import ENCODINGS, make_encoding
from ropelab.errors import RopeConfigError
from ropelab.rope import METHODS, Method, Rope, RopeConfig, apply_rotary, apply_rotary_, rotate

__version__ = "0.1.0"

__all__ = [
    "ENCODINGS",
    "METHODS",
    "Method",
    "Rope",
    "RopeConfig",
    "RopeConfigError",
    "__version__",
    "alibi_slopes",
    "apply_rotary",
    "apply_rotary_",
    "make_encoding",
    "rotate",
]
