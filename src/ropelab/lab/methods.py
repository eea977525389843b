"""Context-extension methods applied zero-shot (or fine-tuned) to the lab's RoPE model.

Each method is a different :class:`~ropelab.encodings.base.PositionEncoding` swapped into the
trained model; no weight changes. The *policy* for the parameters that depend on the target
length ``L`` (``T`` = trained length) is the same for every method:

- PI, NTK, NTK-mixed, YaRN (static): factor ``s = max(1, L / T)`` for an evaluation at length ``L``.
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
- ``*A`` (PI, NTK, NTK-mixed, YaRN): s = A * L / T instead, for a method applied past the
  extension ratio (``ntk*4``; see :func:`parse_label`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.rope.core import Rope


@dataclass(frozen=True)
class Method:
    """A zero-shot method: its label, paper, and whether its scale follows the sequence length."""

    name: str
    doc: str
    dynamic: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", "plain RoPE, extrapolated (no method)"),
        Method("pi", "position interpolation, s = L/T (Chen et al. 2023)"),
        Method("ntk", "NTK-aware base change, s = L/T (bloc97 2023)"),
        Method("ntk-mixed", "NTK-mixed, s = L/T (Su, kexue.fm 9706)"),
        Method("dynamic-ntk", "dynamic NTK, scale from the sequence length (emozilla 2023)", dynamic=True),
        Method("yarn", "YaRN, s = L/T (Peng et al. 2023)"),
        Method("dynamic-yarn", "YaRN with s from the sequence length (Peng et al. 2023)", dynamic=True),
        Method("rerope", "ReRoPE, window T/2 (Su, kexue.fm 9708)"),
        Method("leaky-rerope", "leaky ReRoPE, window T/2, leak to fit L (Su, kexue.fm 9708)"),
        Method("self-extend", "Self-Extend, window T/2, group to fit L (Jin et al. 2024)"),
    )
}

#: the zero-shot methods the lab applies to the RoPE model (each also with ``+log-n``)
ZERO_SHOT = tuple(name for name in METHODS if name != "none")
#: zero-shot labels evaluated by default: plain RoPE with log-n, then every method without and with log-n
DEFAULT_LABELS = ("none+log-n", *(m for name in ZERO_SHOT for m in (name, f"{name}+log-n")))
#: the static methods whose factor follows the evaluation length (s = L/T)
SCALED = ("pi", "ntk", "ntk-mixed", "yarn")
#: the methods the lab fine-tunes with at 4x
FINETUNE = ("none", "pi", "ntk", "yarn")


def parse_label(label: str) -> tuple[str, bool, float]:
    """``NAME[*A][+log-n]`` -> (name, log_n, alpha): ``"ntk*4+log-n"`` -> ``("ntk", True, 4.0)``.

    ``*A`` (static scaled methods only) multiplies the factor: s = A * L / T, for methods that
    need more than the extension ratio (NTK-aware, YaRN paper sec. 3.1). Unknown names raise with
    a "did you mean".
    """
    name, log_n = (label[: -len("+log-n")], True) if label.endswith("+log-n") else (label, False)
    alpha = 1.0
    if "*" in name:
        name, _, text = name.partition("*")
        try:
            alpha = float(text)
        except ValueError:
            alpha = float("nan")
        if not alpha >= 1.0 or name not in SCALED:
            raise RopeConfigError(
                f"lab method {label!r}: '*A' takes a number A >= 1 and one of {', '.join(SCALED)}"
            )
    if name not in METHODS:
        raise RopeConfigError(
            f"unknown lab method {label!r}{did_you_mean(name, METHODS)}; choose from: {', '.join(METHODS)} "
            "(append +log-n for log-n scaling, *A to multiply a static factor)"
        )
    return name, log_n, alpha


def split_label(label: str) -> tuple[str, bool]:
    """``"ntk+log-n"`` -> ``("ntk", True)`` (see :func:`parse_label`)."""
    name, log_n, _ = parse_label(label)
    return name, log_n


def is_dynamic(label: str) -> bool:
    return METHODS[split_label(label)[0]].dynamic


def method_params(label: str, *, trained: int, length: int) -> dict[str, Any]:
    """The policy above as numbers: what the method uses at evaluation length ``length``."""
    name, log_n, alpha = parse_label(label)
    s = max(1.0, length / trained)
    w = trained // 2
    out: dict[str, Any] = {"method": name, "log_n": log_n}
    if name in SCALED:
        out["factor"] = alpha * s
    elif name in ("dynamic-ntk", "dynamic-yarn"):
        out["seq_len"] = length
    elif name == "rerope":
        out["window"] = w
    elif name == "leaky-rerope":
        out.update(window=w, leak=max(1.0, (length - 1 - w) / (trained - 1 - w)))
    elif name == "self-extend":
        out.update(window=w, group=max(1, math.ceil((length - w) / (trained - w))))
    return out


def method_rope(label: str, *, head_dim: int, base: float, trained: int, length: int) -> Rope:
    """The :class:`Rope` (frequencies and log-n) of a method at evaluation length ``length``."""
    p = method_params(label, trained=trained, length=length)
    name, s = p["method"], p.get("factor", 1.0)
    common: dict[str, Any] = {"head_dim": head_dim, "base": base}
    if p["log_n"]:
        common.update(log_n=True, original_max_position_embeddings=trained)
    if name == "pi":
        return Rope("linear", factor=s, **common)
    if name in ("ntk", "ntk-mixed"):
        return Rope(name, factor=s, **common)
    if name == "yarn":
        return Rope("yarn", factor=s, **{**common, "original_max_position_embeddings": trained})
    if name == "dynamic-ntk":
        return Rope("dynamic", **{**common, "original_max_position_embeddings": trained})
    if name == "dynamic-yarn":
        return Rope("dynamic-yarn", **{**common, "original_max_position_embeddings": trained})
    return Rope("default", **common)


def method_encoding(label: str, *, head_dim: int, base: float, trained: int, length: int) -> PositionEncoding:
    """The encoding to swap into the RoPE model for ``label`` at evaluation length ``length``."""
    from ropelab.encodings import RotaryEncoding

    p = method_params(label, trained=trained, length=length)
    rope = method_rope(label, head_dim=head_dim, base=base, trained=trained, length=length)
    name = p["method"]
    if name in ("rerope", "leaky-rerope", "self-extend"):
        extra = {k: p[k] for k in ("window", "leak", "group") if k in p}
        return RotaryEncoding(rope, attention=name, **extra)
    return RotaryEncoding(rope)
