"""`check_config`: for one transformers config, what each stack computes next to ropelab's exact reference.

The reference is ``ropelab.Rope.from_hf`` on the same (standardised) rope parameters. Each stack module
(:mod:`~ropelab.stacks.transformers`, :mod:`~ropelab.stacks.vllm`, :mod:`~ropelab.stacks.llamacpp`)
says which inverse frequencies and attention factor it uses at each evaluated length; this module
compares them and gives a one-line verdict per stack: ``same``, ``differs: <why>`` or
``cannot express: <why>``.

Lengths: one (the config's maximum length) for methods whose table does not depend on the length;
for dynamic NTK / dynamic YaRN, L0 and L0 * factor; for LongRoPE, L0 (short factors) and the maximum
length (long factors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.rope.core import Rope
from ropelab.stacks import llamacpp, transformers, vllm
from ropelab.stacks.config import ModelRope, StackPlan, read_config

#: frequencies within this relative difference count as the same (ggml's iterated float32 powers: ~2e-6)
FREQ_RTOL = 1e-5
#: attention factors within this relative difference count as the same
ATTENTION_RTOL = 1e-6

PlanFn = Callable[[ModelRope, Sequence[int]], StackPlan]
#: stack name -> its planner, in table order
STACKS: dict[str, PlanFn] = {
    transformers.STACK: transformers.plan,
    vllm.STACK: vllm.plan,
    llamacpp.STACK: llamacpp.plan,
}


@dataclass(frozen=True)
class StackRow:
    """One stack's line of the table.

    ``freq_rel_diff``: max over pairs and evaluated lengths of |theta_stack - theta_ref| / theta_ref
    (absolute where theta_ref is 0); ``attention`` / ``attention_ref`` per evaluated length.
    """

    stack: str
    source: str
    verdict: str
    max_length: int | None
    rule: str
    lengths: tuple[int, ...]
    freq_rel_diff: float | None
    worst_length: int | None
    attention: tuple[float, ...]
    attention_rel_diff: float | None
    detail: Mapping[str, Any]
    inv_freq: tuple[tuple[float, ...], ...] = ()  # the stack's theta_i, one tuple per evaluated length

    @property
    def status(self) -> str:
        """``same``, ``differs`` or ``cannot express``."""
        return next(s for s in ("same", "differs", "cannot express") if self.verdict.startswith(s))

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "source": self.source,
            "verdict": self.verdict,
            "max_length": self.max_length,
            "rule": self.rule,
            "lengths": list(self.lengths),
            "freq_rel_diff": self.freq_rel_diff,
            "worst_length": self.worst_length,
            "attention": list(self.attention),
            "attention_rel_diff": self.attention_rel_diff,
            "detail": dict(self.detail),
            "inv_freq": [list(t) for t in self.inv_freq],
        }


@dataclass(frozen=True)
class CheckReport:
    """The reference and one :class:`StackRow` per stack for one config."""

    name: str
    method: str
    rope: Mapping[str, Any]
    rotary_dim: int
    max_position_embeddings: int | None
    trained_length: int | None
    lengths: tuple[int, ...]
    reference_rule: str
    reference_attention: tuple[float, ...]
    rows: tuple[StackRow, ...]
    reference_inv_freq: tuple[tuple[float, ...], ...] = ()  # ropelab's theta_i per evaluated length

    def row(self, stack: str) -> StackRow:
        return next(r for r in self.rows if r.stack == stack)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "rope": dict(self.rope),
            "rotary_dim": self.rotary_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "trained_length": self.trained_length,
            "lengths": list(self.lengths),
            "reference_rule": self.reference_rule,
            "reference_attention": list(self.reference_attention),
            "reference_inv_freq": [list(t) for t in self.reference_inv_freq],
            "stacks": [r.as_dict() for r in self.rows],
        }


def check_config(config: Mapping[str, Any], *, name: str = "config") -> CheckReport:
    """Per-stack frequencies, attention factor, maximum length and rule for one transformers config dict.

    Raises :class:`RopeConfigError` for a config that is not a usable model config (one line naming
    the key). A stack that computes something else is a finding (a ``differs`` verdict), not an error.
    """
    model = read_config(config, name=name)
    rope = reference_rope(model)
    lengths = evaluation_lengths(rope, model.max_position_embeddings)
    rows = tuple(
        compare(fn(model, lengths), rope, lengths, max_length=model.max_position_embeddings)
        for fn in STACKS.values()
    )
    return CheckReport(
        name=name,
        method=rope.config.method,
        rope=rope.to_dict(),
        rotary_dim=rope.rotary_dim,
        max_position_embeddings=model.max_position_embeddings,
        trained_length=rope.config.trained_length,
        lengths=lengths,
        reference_rule=reference_rule(rope),
        reference_attention=tuple(rope.frequencies(n)[1] for n in lengths),
        rows=rows,
        reference_inv_freq=tuple(tuple(rope.frequencies(n)[0].double().tolist()) for n in lengths),
    )


def reference_rope(model: ModelRope) -> Rope:
    """ropelab's exact reading of the standardised rope parameters (``Rope.from_hf``)."""
    try:
        return Rope.from_hf(
            dict(model.rope_parameters),
            head_dim=model.head_dim,
            max_position_embeddings=model.max_position_embeddings,
        )
    except RopeConfigError as err:
        raise RopeConfigError(f"{model.name}: {err}") from None


def evaluation_lengths(rope: Rope, max_position_embeddings: int | None) -> tuple[int, ...]:
    """Where to evaluate: the maximum length, plus L0 for length-dependent methods (see module doc)."""
    trained = rope.config.trained_length
    longest = max_position_embeddings or trained or 1
    method = rope.config.method
    if method in ("dynamic", "dynamic-yarn") and trained:
        return tuple(sorted({trained, max(longest, round(trained * rope.config.scale), trained + 1)}))
    if method == "longrope" and trained:
        return (trained, max(longest, trained + 1))
    return (int(longest),)


def reference_rule(rope: Rope) -> str:
    method = rope.config.method
    trained = rope.config.trained_length
    if method == "dynamic":
        return f"base grows with the length past L0={trained}; plain base up to L0"
    if method == "dynamic-yarn":
        return f"YaRN with s = max(1, L/{trained}), recomputed with the length"
    if method == "longrope":
        return f"short factors up to L0={trained}, long factors beyond"
    return "one static table"


def _rel_diff(values: torch.Tensor, reference: torch.Tensor) -> float:
    if values.shape != reference.shape:
        return math.inf
    ref = reference.double()
    diff = (values.double() - ref).abs()
    nonzero = ref != 0
    rel = torch.where(nonzero, diff / ref.abs().clamp_min(1e-300), diff)
    return float(rel.max()) if rel.numel() else 0.0


def compare(
    plan: StackPlan, rope: Rope, lengths: Sequence[int], *, max_length: int | None = None
) -> StackRow:
    """One :class:`StackRow`: ``plan`` against ``rope`` at ``lengths``.

    ``max_length``: the config's own maximum length; a stack serving another one gets a note.
    """
    if plan.cannot is not None:
        return StackRow(
            plan.stack,
            plan.source,
            f"cannot express: {plan.cannot}",
            plan.max_length,
            plan.rule,
            tuple(lengths),
            None,
            None,
            (),
            None,
            plan.detail,
        )
    worst, worst_at, att_worst = 0.0, None, 0.0
    attention = []
    ref_attention = []
    for ev in plan.evals:
        ref_inv, ref_att = rope.frequencies(ev.seq_len)
        diff = _rel_diff(ev.inv_freq, ref_inv)
        if worst_at is None or diff > worst:
            worst, worst_at = diff, ev.seq_len
        attention.append(ev.attention_factor)
        ref_attention.append(ref_att)
        att_worst = max(att_worst, abs(ev.attention_factor - ref_att) / abs(ref_att))
    if worst <= FREQ_RTOL and att_worst <= ATTENTION_RTOL:
        verdict = "same"
    else:
        reasons = "; ".join(plan.why) or "computes other numbers than the config's transformers meaning"
        numbers = []
        if worst > FREQ_RTOL:
            numbers.append(f"frequencies off by up to {worst:.3g} (relative) at L={worst_at}")
        if att_worst > ATTENTION_RTOL:
            pairs = ", ".join(f"{a:.6g} vs {r:.6g}" for a, r in zip(attention, ref_attention, strict=True))
            numbers.append(f"attention factor {pairs}")
        verdict = f"differs: {reasons} ({'; '.join(numbers)})"
    if max_length and plan.max_length and plan.max_length != max_length:
        verdict += f" [serves up to {plan.max_length} tokens; the config says {max_length}]"
    return StackRow(
        plan.stack,
        plan.source,
        verdict,
        plan.max_length,
        plan.rule,
        tuple(lengths),
        worst,
        worst_at,
        tuple(attention),
        att_worst,
        plan.detail,
        tuple(tuple(ev.inv_freq.tolist()) for ev in plan.evals),
    )
