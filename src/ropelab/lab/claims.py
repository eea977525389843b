"""The seed's claims (RESULTS.md) checked against the lab's rows, each with the numbers that decide it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ropelab.lab.tables import Records, cell, finetune_rows, index_rows, lengths_of, nx, trained_of

#: a loss "holds" while it stays within this many nats of its reference (about 5% in perplexity)
HOLD_MARGIN = 0.05


def claims(records: Records) -> list[dict[str, Any]]:
    """The seed's claims (RESULTS.md) as measured here, each with the numbers that decide it.

    Losses are mean NLL in nats per byte. "Holds" uses a fixed margin, :data:`HOLD_MARGIN`; a claim
    without its records is left out.
    """
    out: list[dict[str, Any]] = []
    if not records:
        return out
    T, lengths = trained_of(records), lengths_of(records)
    idx, ctx = index_rows(records, "length"), index_rows(records, "context")
    top = lengths[-1]

    def add(claim: str, measured: str, holds: bool | None, partly: str = "-") -> None:
        verdict = partly if holds is None else ("yes" if holds else "NO")
        out.append({"claim": claim, "measured": measured, "holds": verdict})

    def block(model: str, method: str, i: int) -> float | None:
        row = idx.get((model, method, top))
        return row["block_loss"][i] if row and len(row["block_loss"]) > i else None

    sin0, sin1 = block("sinusoidal", "none", 0), block("sinusoidal", "none", 1)
    if sin0 is not None and sin1 is not None:
        add(
            "sinusoidal breaks just past T",
            f"loss {sin0:.3f} in [0,T) -> {sin1:.3f} in [T,2T)",
            sin1 > sin0 + 0.5,
        )
    rope_in, rope_out = (
        cell(idx, "rope", "none", top, "loss_inside"),
        cell(idx, "rope", "none", top, "loss_beyond"),
    )
    sin_out = cell(idx, "sinusoidal", "none", top, "loss_beyond")
    if None not in (rope_in, rope_out, sin_out):
        add(
            "RoPE degrades (less than sinusoidal)",
            f"beyond T at {nx(top, T)}: RoPE {rope_out:.3f} (inside {rope_in:.3f}), sinusoidal {sin_out:.3f}",
            rope_out > rope_in + HOLD_MARGIN and rope_out < sin_out,
        )
    a_in, a_out = (
        cell(idx, "alibi", "none", top, "loss_inside"),
        cell(idx, "alibi", "none", top, "loss_beyond"),
    )
    a_c0, a_c1 = (
        cell(ctx, "alibi", "none", lengths[0], "loss_last"),
        cell(ctx, "alibi", "none", top, "loss_last"),
    )
    if None not in (a_in, a_out, a_c0, a_c1):
        add(
            "ALiBi stays flat",
            f"inside {a_in:.3f}, beyond at {nx(top, T)} {a_out:.3f}; same tokens with {nx(lengths[0], T)} -> "
            f"{nx(top, T)} context {a_c0:.3f} -> {a_c1:.3f}",
            a_out <= a_in + HOLD_MARGIN and a_c1 <= a_c0 + HOLD_MARGIN,
        )
    four = 4 * T if 4 * T in lengths else top
    pi4, ntk4 = cell(idx, "rope", "linear", four, "loss"), cell(idx, "rope", "ntk", four, "loss")
    if pi4 is not None and ntk4 is not None:
        add(
            "PI zero-shot is worse than NTK zero-shot",
            f"loss over {nx(four, T)} tokens: PI {pi4:.3f}, NTK {ntk4:.3f}",
            pi4 > ntk4,
        )
    ft, _ = finetune_rows(records)
    if ft and ft[0].get("linear") is not None and ft[-1].get("linear") is not None:
        first, last = ft[0], ft[-1]
        ref = ntk4 if four == 4 * T else None
        measured = (
            f"PI at 4x: {first['linear']:.3f} at step 0 -> {last['linear']:.3f} after {last['step']} steps"
        )
        if ref is not None:
            measured += f"; NTK zero-shot {ref:.3f}"
        add(
            "PI recovers within a few hundred steps",
            measured,
            last["linear"] < first["linear"] - HOLD_MARGIN
            and (ref is None or last["linear"] <= ref + HOLD_MARGIN),
        )
        if last.get("none") is not None:
            add(
                "PI fine-tunes better than plain RoPE (PI paper: direct fine-tuning adapts slowly)",
                f"after {last['step']} steps at 4x: PI {last['linear']:.3f}, plain RoPE {last['none']:.3f} "
                f"(from {first['linear']:.3f} and {first['none']:.3f})",
                last["linear"] <= last["none"] + HOLD_MARGIN,
            )
    for label, name in (
        ("ntk", "NTK"),
        ("ntk+log-n", "NTK + log-n"),
        ("rerope", "ReRoPE"),
        ("rerope+log-n", "ReRoPE + log-n"),
    ):
        reach = holds_to(ctx, "rope", label, lengths)
        c0, c1 = cell(ctx, "rope", label, lengths[0], "loss_last"), cell(ctx, "rope", label, top, "loss_last")
        plain = cell(ctx, "rope", "none", top, "loss_last")
        if reach is None or None in (c0, c1, plain):
            continue
        add(
            f"{name} holds without training",
            f"same last T tokens, context {nx(lengths[0], T)} -> {nx(top, T)}: {c0:.3f} -> {c1:.3f}, within "
            f"{HOLD_MARGIN} nats up to {nx(reach, T)} (plain RoPE {plain:.3f} at {nx(top, T)})",
            True if reach == top else (None if reach > lengths[0] else False),
            partly=f"to {nx(reach, T)}",
        )
    return out


def holds_to(
    ctx: Mapping[tuple[str, str, int], Mapping[str, Any]], model: str, method: str, lengths: Sequence[int]
) -> int | None:
    """The longest context L such that the same-tokens loss stays within :data:`HOLD_MARGIN` of its
    value at the shortest context for every length up to L (None without records)."""
    base = cell(ctx, model, method, lengths[0], "loss_last")
    if base is None:
        return None
    reach = lengths[0]
    for n in lengths[1:]:
        value = cell(ctx, model, method, n, "loss_last")
        if value is None or value > base + HOLD_MARGIN:
            break
        reach = n
    return reach
