"""`Extension`: what :func:`ropelab.hf.extend` applied to a model (a method resolved against its config).

A leaf of ``ropelab.hf``: ``extend`` builds one, and the attention function (``hf/attention.py``,
``hf/attention_methods.py``) reads it, without either importing the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ropelab.rope.core import Rope, check_precision


@dataclass(frozen=True)
class Extension:
    """What ``extend`` applied: the Rope (frequencies) and the attention variant."""

    name: str  # the canonical method name (ropelab.registry)
    rope: Rope = field(compare=False)
    attention: str = "rope"  # "rope" | "rerope" | "leaky-rerope" | "self-extend"
    window: int | None = None
    leak: float | None = None
    group: int | None = None
    native: bool = False
    layer_types: tuple[str, ...] | None = None  # per-layer-type models: the layer types it replaces
    #: the arithmetic of the cos/sin angles on ropelab's attention route (:meth:`ropelab.Rope.cos_sin`):
    #: ``float64`` (default: angles from the float32 frequencies in float64, the exact table) or
    #: ``float32`` (transformers' own rotary arithmetic: at position p a float32 angle is off by up to half
    #: an ulp of ``p * theta``, about 2.4e-4 rad near p = 6000 for the fastest pairs, which moves logits by
    #: ~1e-3 over a 30-layer model; ``float32`` reproduces what transformers computes from the same
    #: frequencies). ``dataclasses.replace(ext, precision="float32")`` before :func:`ropelab.hf.extend`.
    precision: str = "float64"

    def __post_init__(self) -> None:
        check_precision(self.precision)

    def resolved(self) -> dict[str, Any]:
        """Every parameter the method runs with, the defaults filled in (what results rows record).

        The RoPE geometry and the frequency method's parameters (:meth:`ropelab.Rope.to_dict`, less the
        method name; ``factor`` as the scale s the method uses, for every method but plain RoPE),
        ``attention_scaling`` (the cos/sin multiplier, YaRN's mscale), and for the attention methods
        ``window``, ``leak``, ``group`` and the frequency method under them (``rope_method``, if not
        plain RoPE); ``layer_types`` on a model with a RoPE per layer type.
        """
        out = {k: v for k, v in self.rope.to_dict().items() if k != "method"}
        if self.rope.config.method != "default":
            out["factor"] = self.rope.config.scale
            if self.attention != "rope":
                out["rope_method"] = self.rope.config.method
        out["attention_scaling"] = float(self.rope.frequencies()[1])
        for key in ("window", "leak", "group"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.layer_types is not None:
            out["layer_types"] = list(self.layer_types)
        if self.precision != "float64":
            out["precision"] = self.precision
        return dict(sorted(out.items()))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.name, "rope": self.rope.to_dict(), "attention": self.attention}
        if self.layer_types is not None:
            out["layer_types"] = list(self.layer_types)
        for key in ("window", "leak", "group"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out
