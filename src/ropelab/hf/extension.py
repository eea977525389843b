"""`Extension`: what :func:`ropelab.hf.extend` applied to a model (a method resolved against its config).

A leaf of ``ropelab.hf``: ``extend`` builds one, and the attention function (``hf/attention.py``,
``hf/attention_methods.py``) reads it, without either importing the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ropelab.rope.core import Rope


@dataclass(frozen=True)
class Extension:
    """What ``extend`` applied: the Rope (frequencies) and the attention variant."""

    name: str
    rope: Rope = field(compare=False)
    attention: str = "rope"  # "rope" | "rerope" | "leaky-rerope" | "self-extend"
    window: int | None = None
    leak: float | None = None
    group: int | None = None
    native: bool = False
    layer_types: tuple[str, ...] | None = None  # per-layer-type models: the layer types it replaces

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.name, "rope": self.rope.to_dict(), "attention": self.attention}
        if self.layer_types is not None:
            out["layer_types"] = list(self.layer_types)
        for key in ("window", "leak", "group"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out
