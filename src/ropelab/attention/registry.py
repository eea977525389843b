"""The attention-level methods by name: the one list that ``eval``, ``ropelab.hf.extend`` and ``export`` use.

These methods change the attention scores themselves (relative positions capped or grouped), so no RoPE
frequency table, and no serving stack's RoPE config, can carry them.
"""

from __future__ import annotations

#: name -> one line with its paper; the options each takes are resolved in ``ropelab.hf.extend``
ATTENTION_METHODS: dict[str, str] = {
    "rerope": "ReRoPE: relative positions capped at a window w (Su 2023, kexue.fm 9708)",
    "leaky-rerope": "leaky ReRoPE: inside w as RoPE, beyond w + (i-j-w)/k (Su 2023, kexue.fm 9708)",
    "self-extend": "Self-Extend: neighbour window W, grouped beyond it (Jin et al. 2024, arXiv 2401.01325)",
}
