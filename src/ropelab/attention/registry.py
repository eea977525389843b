"""The attention-level methods by name: the one table that the vocabulary (:mod:`ropelab.registry`),
``ropelab.hf.extend``, the lab's :class:`~ropelab.encodings.RotaryEncoding` and ``export`` use.

These methods change the attention scores themselves (relative positions capped or grouped), so no RoPE
frequency table, and no serving stack's RoPE config, can carry them.
"""

from __future__ import annotations

from typing import NamedTuple


class AttentionMethod(NamedTuple):
    """One attention-level method: what it does, its paper, the options it needs."""

    doc: str
    paper: str
    params: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc} ({self.paper})"


#: name -> :class:`AttentionMethod`; defaults of the options depend on the caller (model or lab policy)
ATTENTION_METHODS: dict[str, AttentionMethod] = {
    "rerope": AttentionMethod(
        "ReRoPE: relative positions capped at a window w", "Su 2023, kexue.fm 9708", ("window",)
    ),
    "leaky-rerope": AttentionMethod(
        "leaky ReRoPE: inside w as RoPE, beyond w + (i-j-w)/k", "Su 2023, kexue.fm 9708", ("leak", "window")
    ),
    "self-extend": AttentionMethod(
        "Self-Extend: neighbour window W, grouped beyond it",
        "Jin et al. 2024, arXiv 2401.01325",
        ("group", "window"),
    ),
}
