"""The lab's *policy* for context-extension methods on its RoPE model: which parameters at which length.

The names are :mod:`ropelab.registry`'s (aliases such as ``pi`` or ``dynamic-ntk`` accepted and
normalised to the canonical name: :func:`parse_label`); this module only decides the parameters
that depend on the target length ``L`` (``T`` = trained length), the same rule for every method.
Each method is a different :class:`~ropelab.encodings.base.PositionEncoding` swapped into the
trained model; no weight changes.

- linear (PI), NTK, NTK-mixed, YaRN (static): factor ``s = max(1, L / T)`` at evaluation length ``L``.
- dynamic NTK, dynamic YaRN: the scale follows the sequence length (``s = max(1, l / T)``, HF
  ``dynamic`` with factor 1 and YaRN with ``s`` recomputed). The lab scores each position with the
  scale of the shortest evaluation length that contains it (positions in ``[L/2, L)`` at length
  ``L``, ... ``[0, T)`` at ``T``): what a model generating token by token, re-encoding the prompt
  at each evaluation length, sees; positions inside ``T`` keep the trained frequencies.
- ReRoPE: window ``w = T/2``: relative distances ``>= w`` read as ``w`` (Su, kexue.fm 9708).
- leaky ReRoPE: window ``w = T/2``, leak ``k = max(1, (L - 1 - w) / (T - 1 - w))`` so the
  farthest distance ``L - 1`` maps to ``T - 1``, inside the trained range.
- Self-Extend: neighbour window ``W = T/2``, group ``G = max(1, ceil((L - W) / (T - W)))``, the
  smallest group whose maximum reach ``(T - W) G + W`` covers ``L`` (Jin et al. 2024).
- ``+log-n``: queries at position n scaled by ``max(1, log(n+1) / log T)`` (Su, kexue.fm 9706).
- ``*A`` (linear, NTK, NTK-mixed, YaRN): s = A * L / T instead, for a method applied past the
  extension ratio (``ntk*4``; :attr:`ropelab.registry.MethodSpec.multiplier`).
"""

from __future__ import annotations

import math
from typing import Any

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError
from ropelab.registry import REGISTRY, MethodSpec, parse_method
from ropelab.rope.core import Rope

#: the registry's methods this policy covers, in the order of the lab's tables (canonical names)
METHODS = (
    "none",
    "linear",
    "ntk",
    "ntk-mixed",
    "dynamic",
    "yarn",
    "dynamic-yarn",
    "rerope",
    "leaky-rerope",
    "self-extend",
)
#: the zero-shot methods the lab applies to the RoPE model (each also with ``+log-n``)
ZERO_SHOT = tuple(name for name in METHODS if name != "none")
#: zero-shot labels evaluated by default: plain RoPE with log-n, then every method without and with log-n
DEFAULT_LABELS = ("none+log-n", *(m for name in ZERO_SHOT for m in (name, f"{name}+log-n")))
#: the static methods whose factor follows the evaluation length (s = L/T)
SCALED = ("linear", "ntk", "ntk-mixed", "yarn")
#: the methods the lab fine-tunes with at 4x
FINETUNE = ("none", "linear", "ntk", "yarn")
#: the methods whose parameters come from an attention window (relative positions capped or grouped)
ATTENTION = ("rerope", "leaky-rerope", "self-extend")


def lab_spec(label: str) -> MethodSpec:
    """``NAME[*A][+log-n]`` (any registry spelling) -> its :class:`MethodSpec`, checked against the policy.

    Unknown names raise with the registry's "did you mean"; a registry method this policy does not
    cover, an explicit parameter (the policy sets them from ``L / T``) or ``*A`` on a method without a
    static factor raise :class:`RopeConfigError` naming the fix.
    """
    spec = parse_method(label)
    if spec.method not in METHODS:
        kind = REGISTRY[spec.method].kind
        what = "an encoding (see --encodings)" if kind == "encoding" else "not covered by the lab's policy"
        raise RopeConfigError(
            f"lab method {label!r}: {spec.method!r} is {what}; choose from: {', '.join(METHODS)} "
            "(append +log-n for log-n scaling, *A to multiply a static factor)"
        )
    if spec.params:
        raise RopeConfigError(
            f"lab method {label!r}: the lab sets {spec.method}'s parameters from L/T; write {spec.method} "
            "without (key=value) (*A multiplies a static factor)"
        )
    if spec.multiplier != 1.0 and spec.method not in SCALED:
        raise RopeConfigError(
            f"lab method {label!r}: '*A' takes a number A >= 1 and one of {', '.join(SCALED)}"
        )
    return spec


def canonical_label(label: str) -> str:
    """The label results carry: ``"pi"`` -> ``"linear"``, ``"dynamic-ntk+log-n"`` -> ``"dynamic+log-n"``."""
    return lab_spec(label).label


def parse_label(label: str) -> tuple[str, bool, float]:
    """``NAME[*A][+log-n]`` -> (canonical name, log_n, alpha): ``"ntk*4+log-n"`` -> ``("ntk", True, 4.0)``.

    ``*A`` (static scaled methods only) multiplies the factor: s = A * L / T, for methods that
    need more than the extension ratio (NTK-aware, YaRN paper sec. 3.1). See :func:`lab_spec`.
    """
    spec = lab_spec(label)
    return spec.method, spec.log_n, spec.multiplier


def split_label(label: str) -> tuple[str, bool]:
    """``"ntk+log-n"`` -> ``("ntk", True)`` (see :func:`parse_label`)."""
    name, log_n, _ = parse_label(label)
    return name, log_n


def is_dynamic(label: str) -> bool:
    """Whether the method's scale follows the sequence length (the registry's ``dynamic``)."""
    return REGISTRY[split_label(label)[0]].dynamic


def method_params(label: str, *, trained: int, length: int) -> dict[str, Any]:
    """The policy above as numbers: what the method uses at evaluation length ``length``."""
    name, log_n, alpha = parse_label(label)
    s = max(1.0, length / trained)
    w = trained // 2
    out: dict[str, Any] = {"method": name, "log_n": log_n}
    if name in SCALED:
        out["factor"] = alpha * s
    elif REGISTRY[name].dynamic:
        out["seq_len"] = length
    elif name == "rerope":
        out["window"] = w
    elif name == "leaky-rerope":
        out.update(window=w, leak=max(1.0, (length - 1 - w) / (trained - 1 - w)))
    elif name == "self-extend":
        out.update(window=w, group=max(1, math.ceil((length - w) / (trained - w))))
    return out


def resolved_params(label: str, *, trained: int, length: int) -> dict[str, Any]:
    """The parameters the method ran with at ``length`` (:func:`method_params` less name and log-n)."""
    p = method_params(label, trained=trained, length=length)
    return {k: v for k, v in p.items() if k not in ("method", "log_n")}


def method_rope(label: str, *, head_dim: int, base: float, trained: int, length: int) -> Rope:
    """The :class:`Rope` (frequencies and log-n) of a method at evaluation length ``length``."""
    p = method_params(label, trained=trained, length=length)
    name, s = p["method"], p.get("factor", 1.0)
    common: dict[str, Any] = {"head_dim": head_dim, "base": base}
    if p["log_n"]:
        common.update(log_n=True, original_max_position_embeddings=trained)
    if name in ("linear", "ntk", "ntk-mixed"):
        return Rope(name, factor=s, **common)
    if name in ("yarn", "dynamic", "dynamic-yarn"):
        extra = {"factor": s} if name == "yarn" else {}
        return Rope(name, **extra, **{**common, "original_max_position_embeddings": trained})
    return Rope("default", **common)


def method_encoding(label: str, *, head_dim: int, base: float, trained: int, length: int) -> PositionEncoding:
    """The encoding to swap into the RoPE model for ``label`` at evaluation length ``length``."""
    from ropelab.encodings import RotaryEncoding

    p = method_params(label, trained=trained, length=length)
    rope = method_rope(label, head_dim=head_dim, base=base, trained=trained, length=length)
    name = p["method"]
    if name in ATTENTION:
        extra = {k: p[k] for k in ("window", "leak", "group") if k in p}
        return RotaryEncoding(rope, attention=name, **extra)
    return RotaryEncoding(rope)
