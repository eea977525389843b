"""Position encodings usable by any model, through the ``embed``/``attend`` contract of
:class:`PositionEncoding` (see :mod:`ropelab.encodings.base`).

    NoPE()                                     # causal mask only
    Sinusoidal(d_model)                        # added to embeddings, any length
    Learned(d_model, max_positions)            # trained table
    RotaryEncoding(rope, attention="rope")     # any RoPE method; rerope / leaky-rerope / self-extend
    XPos(head_dim, gamma=512)                  # RoPE with decay
    ALiBi(n_heads)                             # linear biases, exact slopes for any head count
    make_encoding("alibi", n_heads=12)         # by name; ENCODINGS lists them
"""

from ropelab.attention.methods import alibi_slopes
from ropelab.encodings.alibi import ALiBi
from ropelab.encodings.base import NoPE, PositionEncoding, causal_sdpa, repeat_kv
from ropelab.encodings.learned import Learned
from ropelab.encodings.registry import ENCODINGS, EncodingInfo, make_encoding
from ropelab.encodings.rope import ATTENTION_METHODS, RotaryEncoding
from ropelab.encodings.sinusoidal import Sinusoidal, sinusoidal_table
from ropelab.encodings.xpos import XPos

__all__ = [
    "ATTENTION_METHODS",
    "ENCODINGS",
    "ALiBi",
    "EncodingInfo",
    "Learned",
    "NoPE",
    "PositionEncoding",
    "RotaryEncoding",
    "Sinusoidal",
    "XPos",
    "alibi_slopes",
    "causal_sdpa",
    "make_encoding",
    "repeat_kv",
    "sinusoidal_table",
]
