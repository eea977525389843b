"""ropelab: positional encodings and context-window extension for transformer language models.

Public surface (see README):

    ropelab.REGISTRY                   # the one vocabulary: every method and encoding, kind, params, paper
    ropelab.parse_method("pi(factor=4)+log-n")   # -> MethodSpec("linear", {"factor": 4.0}, log_n=True)
    ropelab.METHODS                    # the RoPE frequency functions behind REGISTRY's frequency methods
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
from ropelab.registry import REGISTRY, MethodSpec, parse_method, parse_methods
from ropelab.rope import METHODS, Method, Rope, RopeConfig, apply_rotary, apply_rotary_, rotate

__version__ = "0.1.0"

__all__ = [
    "ENCODINGS",
    "METHODS",
    "REGISTRY",
    "Method",
    "MethodSpec",
    "Rope",
    "RopeConfig",
    "RopeConfigError",
    "__version__",
    "alibi_slopes",
    "apply_rotary",
    "apply_rotary_",
    "make_encoding",
    "parse_method",
    "parse_methods",
    "rotate",
]
