"""Which ropelab method each stack expresses exactly, derived from the stack modules (so it cannot drift).

For every method in :data:`ropelab.METHODS` a representative configuration (head_dim 128, base 10000,
L0 = 8192, s = 4) is written in the form a user would hand each stack: ``ropelab.export.to_hf`` for
transformers and llama.cpp (whose converter reads the HF config), ``ropelab.export.to_vllm``'s
``rope_parameters`` for vLLM, and the method's own name where the export refuses. The stack module's
numbers are compared with the method's exact frequencies (:func:`ropelab.stacks.check.compare`).
Attention-level methods change the attention scores, not the cos/sin table: no config can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.rope.config import RopeConfig
from ropelab.rope.core import Rope
from ropelab.rope.frequencies import METHODS
from ropelab.stacks.check import STACKS, compare, evaluation_lengths
from ropelab.stacks.config import read_config

HEAD_DIM, BASE, TRAINED, FACTOR = 128, 10000.0, 8192, 4.0

#: attention-level methods (``ropelab.hf.extend``) and the log-n query scale
ATTENTION_LEVEL = {
    "rerope": "ReRoPE",
    "leaky-rerope": "leaky ReRoPE",
    "self-extend": "Self-Extend",
    "log-n": "log-n query scaling",
}
_ATTENTION_WHY = {
    "transformers": "no rope_parameters key; apply it with ropelab.hf.extend",
    "vLLM": "no rope_parameters key or flag",
    "llama.cpp": "no GGUF key or flag",
}
#: RopeConfig field -> transformers rope_parameters key, for the methods' own (unexported) form
_HF_NAME = {"base": "rope_theta", "mixed_exponent": "mixed_b"}


@dataclass(frozen=True)
class Capability:
    """One cell: ``exact``, ``differs: why`` or ``no: why``."""

    method: str
    stack: str
    cell: str


def representative(method: str) -> tuple[Rope, int]:
    """A typical configuration of ``method`` and the max_position_embeddings its config advertises."""
    short = tuple(1.0 + 0.02 * i for i in range(HEAD_DIM // 2))
    long = tuple(1.0 + (FACTOR - 1.0) * (i / (HEAD_DIM // 2 - 1)) ** 2 for i in range(HEAD_DIM // 2))
    longest = int(TRAINED * FACTOR)
    params: dict[str, Any] = {
        "default": {},
        "linear": {"factor": FACTOR},
        "ntk": {"factor": FACTOR},
        "ntk-mixed": {"factor": FACTOR},
        "dynamic": {"factor": FACTOR, "original_max_position_embeddings": TRAINED},
        "ntk-by-parts": {"factor": FACTOR, "original_max_position_embeddings": TRAINED},
        "yarn": {"factor": FACTOR, "original_max_position_embeddings": TRAINED},
        "dynamic-yarn": {"original_max_position_embeddings": TRAINED},
        "llama3": {
            "factor": FACTOR,
            "original_max_position_embeddings": TRAINED,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        "longrope": {
            "original_max_position_embeddings": TRAINED,
            "max_position_embeddings": longest,
            "short_factor": short,
            "long_factor": long,
        },
        "proportional": {"partial_rotary_factor": 0.25},
    }[method]
    if method == "dynamic":
        longest = TRAINED  # transformers' dynamic NTK keys on max_position_embeddings as L0
    return Rope(method, head_dim=HEAD_DIM, base=BASE, **params), longest


def _own_form(rope: Rope) -> dict[str, Any]:
    """The method under its ropelab name with transformers' key names."""
    cfg: RopeConfig = rope.config
    out: dict[str, Any] = {"rope_type": cfg.method}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("method", "head_dim", "max_position_embeddings") or value in (None, f.default):
            continue
        out[_HF_NAME.get(f.name, f.name)] = list(value) if isinstance(value, tuple) else value
    out.setdefault("rope_theta", cfg.base)
    return out


def stack_form(rope: Rope, stack: str) -> dict[str, Any]:
    """The rope parameters a user would give ``stack`` for ``rope`` (the export, else the method's name)."""
    from ropelab.export import to_hf, to_vllm

    try:
        if stack == "vLLM":
            return dict(to_vllm(rope)["hf_overrides"]["rope_parameters"])
        return dict(to_hf(rope))
    except RopeConfigError:
        return _own_form(rope)


def _short(reason: str) -> str:
    """The first clause of a reason (before any parenthesis or semicolon)."""
    return reason.split(" (", 1)[0].split(";", 1)[0].strip()


def _cell(status: str, verdict: str, why: tuple[str, ...], cannot: str | None) -> str:
    if status == "same":
        return "exact"
    if status == "cannot express":
        return f"no: {_short(cannot or '')}"
    return f"differs: {_short(why[0] if why else verdict.removeprefix('differs: '))}"


def capability(method: str, stack: str) -> Capability:
    """Whether ``stack`` computes ``method``'s exact frequencies and attention factor."""
    if method in ATTENTION_LEVEL:
        why = _ATTENTION_WHY[stack]
        if method == "self-extend" and stack == "llama.cpp":
            why += " (Self-Extend was removed from the server)"
        return Capability(method, stack, f"no: attention-level; {why}")
    rope, longest = representative(method)
    config = {
        "model_type": "phi3" if method == "longrope" else "llama",
        "hidden_size": HEAD_DIM * 8,
        "num_attention_heads": 8,
        "head_dim": HEAD_DIM,
        "max_position_embeddings": longest,
        "rope_scaling": stack_form(rope, stack),
    }
    if method == "longrope":  # Phi-3 keeps L0 at top level (Phi3Config's own default, 4096, would win)
        config["original_max_position_embeddings"] = TRAINED
    lengths = evaluation_lengths(rope, longest)
    plan = STACKS[stack](read_config(config, name=method), lengths)
    row = compare(plan, rope, lengths)
    return Capability(method, stack, _cell(row.status, row.verdict, plan.why, plan.cannot))


def capability_table() -> list[dict[str, str]]:
    """One row per ropelab method (frequency methods, then attention-level ones), one column per stack."""
    rows = []
    for method in [*METHODS, *ATTENTION_LEVEL]:
        row = {"method": method}
        for stack in STACKS:
            row[stack] = capability(method, stack).cell
        rows.append(row)
    return rows


def capability_markdown() -> str:
    """:func:`capability_table` as a Markdown table (docs/check.md embeds it; a test keeps them equal)."""
    from ropelab.report import format_table

    return format_table(capability_table(), markdown=True)
