"""Build a position encoding from a name and keyword arguments.

make_encoding("alibi", n_heads=8)
make_encoding("rope", method="yarn", head_dim=64, factor=4.0, original_max_position_embeddings=128)
make_encoding("rope", head_dim=64, attention="self-extend", group=4, window=32)
make_encoding(**encoding.config())        # round trip
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from ropelab.encodings.alibi import ALiBi
from ropelab.encodings.base import NoPE, PositionEncoding
from ropelab.encodings.learned import Learned
from ropelab.encodings.rope import RotaryEncoding
from ropelab.encodings.sinusoidal import Sinusoidal
from ropelab.encodings.xpos import XPos
from ropelab.errors import RopeConfigError, did_you_mean

__all__ = ["ENCODINGS", "EncodingInfo", "make_encoding"]


class EncodingInfo(NamedTuple):
    """One registry entry: the class, a one-line description and the paper."""

    cls: type[PositionEncoding]
    doc: str
    paper: str


ENCODINGS: dict[str, EncodingInfo] = {
    "nope": EncodingInfo(
        NoPE, "no position information; the causal mask alone", "Kazemnejad et al. 2023, arXiv 2305.19466"
    ),
    "sinusoidal": EncodingInfo(
        Sinusoidal, "fixed sin/cos added to the embeddings", "Vaswani et al. 2017, arXiv 1706.03762"
    ),
    "learned": EncodingInfo(
        Learned,
        "trained absolute position table added to the embeddings",
        "Gehring et al. 2017, arXiv 1705.03122",
    ),
    "rope": EncodingInfo(
        RotaryEncoding,
        "rotary q/k with any RoPE method; attention rope, rerope, leaky-rerope or self-extend",
        "Su et al. 2021, arXiv 2104.09864",
    ),
    "xpos": EncodingInfo(XPos, "RoPE with a per-pair exponential decay", "Sun et al. 2022, arXiv 2212.10554"),
    "alibi": EncodingInfo(
        ALiBi, "linear distance bias per head, no embedding", "Press et al. 2021, arXiv 2108.12409"
    ),
}


def make_encoding(name: str, **kwargs: Any) -> PositionEncoding:
    """The encoding ``name`` (a key of :data:`ENCODINGS`) built from ``kwargs``.

    ``"rope"`` takes ``method`` (a key of :data:`ropelab.METHODS`, default ``"default"``), the
    :class:`ropelab.RopeConfig` fields (``head_dim``, ``base``, ``factor``, ...) and the encoding options
    (``layout``, ``attention``, ``window``, ``leak``, ``group``, ``block_size``). Unknown names and keys
    raise :class:`ropelab.RopeConfigError` with a "did you mean".
    """
    info = ENCODINGS.get(name)
    if info is None:
        raise RopeConfigError(
            f"unknown encoding {name!r}{did_you_mean(name, ENCODINGS)}; choose one of: {', '.join(ENCODINGS)}"
        )
    if info.cls is RotaryEncoding:
        return RotaryEncoding.from_kwargs(**kwargs)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {
        key: p
        for key, p in inspect.signature(info.cls.__init__).parameters.items()
        if key != "self" and p.kind in named
    }
    valid = list(params)
    for key in kwargs:
        if key not in valid:
            raise RopeConfigError(
                f"encoding {name!r} has no parameter {key!r}{did_you_mean(key, valid)}; "
                f"it takes: {', '.join(valid) or 'nothing'}"
            )
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in kwargs:
            raise RopeConfigError(f"encoding {name!r} needs {key!r} (it takes: {', '.join(valid)})")
    return info.cls(**kwargs)
